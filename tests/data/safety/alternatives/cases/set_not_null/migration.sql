-- AlterTable
ALTER TABLE "Post" ALTER COLUMN "views" SET NOT NULL;
