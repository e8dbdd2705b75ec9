-- AlterTable
ALTER TABLE "User" ALTER COLUMN "role" SET DATA TYPE "Role" USING ("role"::"Role");
