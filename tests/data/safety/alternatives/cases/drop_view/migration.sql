DROP VIEW "PublishedPost";
