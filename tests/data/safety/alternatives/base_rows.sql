-- Some rows, enough that every batched backfill (5000 rows a batch) runs more than once.
INSERT INTO "User" ("id", "email", "name", "role")
SELECT 'u' || g, 'user' || g || '@example.com', 'User ' || g, CASE WHEN g % 3 = 0 THEN 'ADMIN' ELSE 'USER' END
FROM generate_series(1, 300) g;
INSERT INTO "Post" ("title", "views", "authorId", "published")
SELECT 'Post ' || g, CASE WHEN g % 4 = 0 THEN NULL ELSE g END, 'u' || (g % 300 + 1), g % 2 = 0
FROM generate_series(1, 12000) g;
INSERT INTO "Comment" ("postId", "body") SELECT (g * 4) % 12000 + 1, 'Comment ' || g FROM generate_series(1, 500) g;
INSERT INTO "Session" ("id", "userId", "expires")
SELECT 's' || g, 'u' || g, now() + interval '1 day' FROM generate_series(1, 300) g;
INSERT INTO "Order" ("total") SELECT g * 1.5 FROM generate_series(1, 200) g;
INSERT INTO "AuditLog" ("action") SELECT 'login' FROM generate_series(1, 100) g;
INSERT INTO "Event" ("id", "createdAt") SELECT 'e' || g, '2023-03-01'::timestamp + g * interval '1 hour'
FROM generate_series(1, 100) g;
