REINDEX INDEX "Post_title_idx";
