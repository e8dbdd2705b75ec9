ALTER TABLE "User" DROP COLUMN "emailVerified";
