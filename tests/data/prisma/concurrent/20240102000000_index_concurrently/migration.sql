-- CreateIndex (alone in its file: PostgreSQL refuses CONCURRENTLY inside a transaction block)
CREATE INDEX CONCURRENTLY "Item_sku_idx" ON "Item"("sku");
