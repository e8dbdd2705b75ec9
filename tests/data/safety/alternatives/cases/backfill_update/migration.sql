UPDATE "User" SET "role" = 'ADMIN', "name" = upper("name") WHERE "email" LIKE '%1@example.com';
