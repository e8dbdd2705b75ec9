-- AlterTable
ALTER TABLE "User" ADD COLUMN     "bio" TEXT;

-- CreateIndex
CREATE INDEX "Post_authorId_idx" ON "Post"("authorId");
