-- AlterTable
ALTER TABLE "User" DROP COLUMN "legacyToken",
ADD COLUMN     "username" TEXT NOT NULL;
