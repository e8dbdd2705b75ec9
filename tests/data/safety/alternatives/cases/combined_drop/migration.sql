-- AlterTable
ALTER TABLE "User" DROP COLUMN "legacyToken",
ADD COLUMN     "bio" TEXT;
