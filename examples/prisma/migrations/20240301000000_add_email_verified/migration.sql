-- Phase 1 of the runbook's multi-phase example: add the new column as nullable.
-- AlterTable
ALTER TABLE "User" ADD COLUMN "emailVerified" BOOLEAN DEFAULT false;
