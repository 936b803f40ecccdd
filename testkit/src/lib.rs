//! cyrvault-testkit: a private real Cyrus on loopback and a seeded mail generator
//! (`sandbox`), for cyrvault's integration tests, examples and benches. A
//! dev-dependency only: neither the service nor the backup host ships it.

pub mod sandbox;
