-- Photos of defect claims: content checked (JPEG/PNG/WebP), stored on disk by checksum.
CREATE TABLE attachments (
    attachment_id  text PRIMARY KEY,
    case_id        text NOT NULL REFERENCES cases,
    filename       text NOT NULL,
    content_type   text NOT NULL,
    size_bytes     integer NOT NULL,
    sha256         text NOT NULL,
    storage_path   text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    UNIQUE (case_id, sha256)
);
