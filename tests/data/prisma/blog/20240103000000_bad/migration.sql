-- CreateTable
CREATE TABLE "Audit" (
    "id" SERIAL NOT NULL,
    "note" TEXT NOT NULL,
    CONSTRAINT "Audit_pkey" PRIMARY KEY ("id")
);

INSERT INTO "Audit" ("note") VALUES ('first');

-- A bug: fails after the table above was created in the same file.
SELECT 1 / 0;
