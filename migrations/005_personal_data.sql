-- Personal data (issue 16).
-- Bank details are sealed by the application (codec.py: AES-256-GCM, bound to table, column and row):
-- payouts.iban, .bic and .account_holder hold "enc:<key id>:<base64>", or 'erased'. What is shown
-- (API, emails, timeline, Temporal) is iban_masked / holder_masked; only the transfer activity opens them.
ALTER TABLE payouts ADD COLUMN iban_masked text, ADD COLUMN holder_masked text;
-- Rows written in clear before this migration (dev stacks only; nothing ran in production): masked and
-- erased, since SQL has no key to seal them with.
UPDATE payouts SET iban_masked = repeat('•', greatest(length(iban) - 4, 0)) || right(iban, 4),
                   holder_masked = '•', iban = 'erased', account_holder = 'erased', bic = NULL
 WHERE iban NOT LIKE 'enc:%';
ALTER TABLE payouts ALTER COLUMN iban_masked SET NOT NULL, ALTER COLUMN holder_masked SET NOT NULL,
    ADD CONSTRAINT payouts_bank_details_sealed CHECK (
        (iban LIKE 'enc:%' OR iban = 'erased') AND (account_holder LIKE 'enc:%' OR account_holder = 'erased')
        AND (bic IS NULL OR bic LIKE 'enc:%'));

-- Erasure of a customer's personal data once all their cases are closed (starter/erasure.py).
ALTER TABLE customers ADD COLUMN erased_at timestamptz;
