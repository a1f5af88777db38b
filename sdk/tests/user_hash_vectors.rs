//! The user-hash vectors shared with the Python package's tests
//! (`schema/testdata/user_hash_vectors.json`): the Rust hasher (used by this SDK
//! and the collector) and the Python one agree on every vector.

use growth_sdk::{Tracker, UserHasher};

#[test]
fn every_shared_vector_hashes_alike() {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../schema/testdata/user_hash_vectors.json"
    );
    let text = std::fs::read_to_string(path).expect("vectors file");
    let doc: serde_json::Value = serde_json::from_str(&text).expect("JSON");
    let vectors = doc["vectors"].as_array().expect("vectors");
    assert!(vectors.len() > 10);
    for vector in vectors {
        let key = vector["key"].as_str().map(|k| k.as_bytes().to_vec());
        let id = vector["user_id"].as_str().expect("id");
        let expected = vector["hash"].as_str().expect("hash");
        assert_eq!(
            UserHasher::new(key.clone()).hash(id).as_str(),
            expected,
            "{vector}"
        );
        let tracker = Tracker::builder("vectors")
            .env_vars::<&str, &str>([])
            .user_hash_key(key)
            .disabled(true)
            .build()
            .expect("builds");
        assert_eq!(tracker.hash_user(id).as_str(), expected, "{vector}");
    }
}
