-- AlterTable
ALTER TABLE "Post" ALTER COLUMN "published" DROP DEFAULT;
