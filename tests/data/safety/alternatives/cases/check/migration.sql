ALTER TABLE "Order" ADD CONSTRAINT "Order_total_positive" CHECK ("total" >= 0);
