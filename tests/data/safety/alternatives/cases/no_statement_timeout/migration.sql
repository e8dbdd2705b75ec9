-- AlterTable
ALTER TABLE "Post" ADD COLUMN     "subtitle" TEXT;
