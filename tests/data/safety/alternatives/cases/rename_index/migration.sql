-- RenameIndex
ALTER INDEX "Post_title_idx" RENAME TO "Post_title_search_idx";
