//! The memory store under the session manager: what the pair does together beyond the contract.

use std::sync::Arc;

use backend_memory::MemoryStore;
use session_core::{
    Access, AppName, Config, EndOutcome, ReadOutcome, SessionId, SessionKey, SessionManager,
    SessionStore,
};

/// The address of the stored item map of `key`, read through a snapshot that is dropped at once.
async fn items_address(store: &MemoryStore, key: &SessionKey) -> usize {
    match store.read(key).await.unwrap() {
        ReadOutcome::Found(s) => Arc::as_ptr(&s.items) as usize,
        other => panic!("expected Found, got {other:?}"),
    }
}

/// A commit through the manager lets go of the items the request loaded before it writes, so the
/// store changes its item map in place instead of copying the whole session for one changed item.
#[tokio::test]
async fn a_managed_commit_changes_the_stored_items_in_place() {
    let store = Arc::new(MemoryStore::new());
    let app = AppName::new("/in-place").unwrap();
    let config = Config::builder()
        .application_name(app.clone())
        .build()
        .unwrap();
    let m = SessionManager::new(Arc::clone(&store) as Arc<dyn SessionStore>, &config);
    let mut s = m.open(None, Access::Exclusive).await.unwrap();
    for i in 0..10u32 {
        s.insert(&format!("item{i}"), &i).unwrap();
    }
    let id = s.id().expose().to_owned();
    assert_eq!(s.end().await.unwrap(), EndOutcome::Created);
    let key = SessionKey::new(app, SessionId::parse(&id).unwrap());
    let before = items_address(&store, &key).await;

    let mut s = m.open(Some(&id), Access::Exclusive).await.unwrap();
    s.insert("item0", &100u32).unwrap();
    assert_eq!(s.end().await.unwrap(), EndOutcome::Committed);

    assert_eq!(
        items_address(&store, &key).await,
        before,
        "the commit copied the item map instead of changing it in place"
    );
    let s = m.open(Some(&id), Access::ReadOnly).await.unwrap();
    assert_eq!(s.get::<u32>("item0").unwrap(), Some(100));
    assert_eq!(s.get::<u32>("item9").unwrap(), Some(9));
    s.end().await.unwrap();
}
