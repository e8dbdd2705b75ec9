-- DropEnum
DROP TYPE "Status";
