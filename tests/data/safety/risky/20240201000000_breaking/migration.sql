-- AlterTable
ALTER TABLE "User" ADD COLUMN "name" TEXT NOT NULL;

-- AlterTable
ALTER TABLE "User" DROP COLUMN "role";
