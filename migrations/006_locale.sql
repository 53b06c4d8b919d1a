-- The language customers and sellers read (pages; later their emails and webhook messages): French first.
ALTER TABLE customers ADD COLUMN locale text NOT NULL DEFAULT 'fr' CHECK (locale IN ('fr', 'en'));
ALTER TABLE sellers ADD COLUMN locale text NOT NULL DEFAULT 'fr' CHECK (locale IN ('fr', 'en'));
