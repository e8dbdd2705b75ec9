ALTER TABLE "Post" ADD CONSTRAINT "Post_title_key" UNIQUE ("title");
