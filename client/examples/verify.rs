//! Verify a token the way an app would on each request it serves.
//!
//! ```sh
//! AUTHENTA_KEY=api_... cargo run -p authenta-client --example verify -- /run/authenta/keyd.sock
//! ```

use authenta_client::{Client, Denied, Permission};

fn main() {
    let socket = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "/run/authenta/keyd.sock".into());
    let Ok(token) = std::env::var("AUTHENTA_KEY") else {
        eprintln!("set AUTHENTA_KEY to the token to check");
        std::process::exit(2);
    };
    let mut client = Client::new(socket);
    match client.verify(&token, &[Permission::Read]) {
        Ok(verified) => println!("200 ok: key {} may read", verified.key_id),
        Err(Denied::Rejected { code, key_id, .. }) => {
            println!("{} {code} (key {key_id:?})", code.status())
        }
        Err(Denied::Unavailable(error)) => println!("503: {error}"),
    }
}
