-- AlterEnum
ALTER TYPE "Role" ADD VALUE 'COUNSELOR';

-- AlterTable
ALTER TABLE "User" ADD COLUMN "emailVerified" BOOLEAN DEFAULT false;
