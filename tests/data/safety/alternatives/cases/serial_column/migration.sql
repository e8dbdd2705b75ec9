-- AlterTable
ALTER TABLE "Order" ADD COLUMN     "number" SERIAL NOT NULL;
