-- CreateIndex
CREATE UNIQUE INDEX "Post_title_key" ON "Post"("title");
