-- AlterTable
ALTER TABLE "User" DROP COLUMN "legacyToken";
