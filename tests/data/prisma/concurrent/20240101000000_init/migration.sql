-- CreateTable
CREATE TABLE "Item" (
    "id" SERIAL NOT NULL,
    "sku" TEXT NOT NULL,
    CONSTRAINT "Item_pkey" PRIMARY KEY ("id")
);

INSERT INTO "Item" ("sku") VALUES ('a-1'), ('b-2'), ('a-1');
