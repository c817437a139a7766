//! Prints a fresh session secret in the form the configuration accepts.
//!
//! ```text
//! cargo run --example keygen
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use tower_sealed_sessions::{Keys, Secret};

fn main() {
    let secret = Secret::generate();
    let text = STANDARD.encode(secret.as_bytes());
    let id = Keys::new(&secret).primary_id();
    println!("base64:{text}");
    eprintln!(
        "\nA new 512-bit session secret, key id {id}. Keep it out of version control, and put \
         it where the configuration's `secret:` can reach it:\n\
         \x20 environment variable   SESSION_SECRET='{text}'\n\
         \x20                        with  secret: \"env:SESSION_SECRET\"\n\
         \x20 mounted file           the same text in /run/secrets/session (a Kubernetes secret)\n\
         \x20                        with  secret: \"file:/run/secrets/session\"\n\
         \x20 inline (tests only)    secret: \"base64:{text}\"\n\
         env: and file: use their bytes as they are, so every replica must read the same text.\n\
         To rotate: make the new secret `secret:` and list the old one in `previous_secrets:`; \
         remove it once its sessions have expired."
    );
}
