// Integration tests: one crate. (being written)

/// Wire protocol transcripts: parser, renderer, self-consistency with the session.
mod protocol;
