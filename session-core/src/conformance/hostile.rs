//! Isolation and hostile input: application isolation, names and values that break naive key
//! building or escaping, large values (docs/contract.md §1, §5).

use super::support::*;
use super::{Harness, Outcome, check};
use crate::{AppName, CreateOutcome, Delta, ItemValue, Items, SessionId, SessionKey};

pub(super) async fn applications_are_isolated(h: Harness) -> Outcome {
    let key = seed_a1(&h, LONG).await?;
    let twin = in_other_app(&h, &key)?;
    let what = "docs/contract.md §1: another application never sees this session";
    expect_missing(&h, &twin, what).await?;
    let a2 = items(&[("a", 2u32)]);
    let out = h.store().create(&twin, &a2, LONG, true).await?;
    let what = "the same id in another application is a different session";
    expect(out, CreateOutcome::Created, what)?;
    expect_found_item(&h, &key, "a", 1, "applications must not share data").await?;
    expect_found_item(&h, &twin, "a", 2, "applications must not share data").await
}

fn hostile_names() -> Vec<String> {
    vec![
        "'".into(),
        "\"".into(),
        "'; DROP TABLE sessions; --".into(),
        "{tag}".into(),
        "}{".into(),
        "%".into(),
        "%s%n%x".into(),
        "_".into(),
        "a\0b".into(),
        "\0".into(),
        "ünïcødé ✓ 🦀".into(),
        "line\nbreak\r\ttab".into(),
        "\\".into(),
        "KEYS[1]".into(),
        "Case".into(),
        "case".into(),
        "x".repeat(256),
    ]
}

pub(super) async fn hostile_item_names_round_trip(h: Harness) -> Outcome {
    let names = hostile_names();
    let mut all = Items::new();
    for (i, n) in names.iter().enumerate() {
        all.insert(n.clone(), val(i));
    }
    let key = seed(&h, &all, LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == names.len(),
        "every hostile name must be stored separately ({} of {})",
        snap.items.len(),
        names.len()
    );
    for (i, n) in names.iter().enumerate() {
        check!(
            get::<usize>(&snap.items, n)? == Some(i),
            "item {n:?} must read back verbatim (names are case-sensitive)"
        );
    }
    // And through a delta.
    let (_, token) = lock(&h, &key).await?;
    let mut delta = Delta::new();
    for n in &names[..8] {
        delta = delta.with_removed(n.clone());
    }
    delta = delta.with_set("'; --%{}\0", val(99u32));
    h.store().commit(&key, token, &delta, LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == names.len() - 8 + 1,
        "delta with hostile names must apply exactly"
    );
    check!(
        get::<u32>(&snap.items, "'; --%{}\0")? == Some(99),
        "hostile name set by a delta"
    );
    Ok(())
}

pub(super) async fn hostile_values_round_trip(h: Harness) -> Outcome {
    let raw: Vec<Vec<u8>> = vec![
        vec![],
        vec![0],
        vec![0xff; 17],
        b"'; DROP TABLE x; --".to_vec(),
        "ünïcødé \0 {}%".as_bytes().to_vec(),
        (0..=255u8).collect(),
    ];
    let mut all = Items::new();
    for (i, r) in raw.iter().enumerate() {
        // Raw bytes, not MessagePack: the store must not care what the bytes are.
        all.insert(format!("raw{i}"), ItemValue::from_bytes(r.clone()));
    }
    let key = seed(&h, &all, LONG).await?;
    let snap = found(&h, &key).await?;
    for (i, r) in raw.iter().enumerate() {
        let got = snap
            .items
            .get(&format!("raw{i}"))
            .map(|v| v.as_bytes().to_vec());
        check!(
            got.as_deref() == Some(r.as_slice()),
            "value raw{i} must be stored byte for byte"
        );
    }
    Ok(())
}

pub(super) async fn hostile_application_names_are_isolated(h: Harness) -> Outcome {
    let id = SessionId::generate()?;
    let base = h.app().as_str().to_owned();
    // Spaces and non-ASCII letters too: ASP.NET application names (virtual paths) have them.
    let apps = [
        "'", "\"", "%", "_", "*", "?", "[a]", ";--", "\\", ":", "/", " a b", "é",
    ]
    .iter()
    .map(|s| AppName::new(&format!("{base}{s}")))
    .collect::<crate::Result<Vec<_>>>()?;
    for (i, app) in apps.iter().enumerate() {
        let key = SessionKey::new(app.clone(), id);
        let out = h
            .store()
            .create(&key, &items(&[("i", i)]), LONG, true)
            .await?;
        let what = format!("app {app:?}: expected Created");
        expect(out, CreateOutcome::Created, &what)?;
    }
    for (i, app) in apps.iter().enumerate() {
        let snap = found(&h, &SessionKey::new(app.clone(), id)).await?;
        check!(
            get::<usize>(&snap.items, "i")? == Some(i),
            "app {app:?} must see only its own session (pattern characters must not match others)"
        );
    }
    Ok(())
}

pub(super) async fn one_mib_value_round_trips(h: Harness) -> Outcome {
    let big: Vec<u8> = (0..(1 << 20)).map(|i: u32| (i % 251) as u8).collect();
    let (key, token) = seed_locked(&h, &Items::new(), LONG).await?;
    let delta = Delta::new().with_set("big", ItemValue::from_bytes(big.clone()));
    h.store().commit(&key, token, &delta, LONG).await?;
    let snap = found(&h, &key).await?;
    let got = snap.items.get("big").map(|v| v.as_bytes().to_vec());
    check!(
        got.as_deref() == Some(big.as_slice()),
        "a 1 MiB value must round-trip byte for byte"
    );
    Ok(())
}

pub(super) async fn hundred_items_round_trip(h: Harness) -> Outcome {
    let all: Items = (0..100)
        .map(|i| {
            (
                format!("item{i:03}"),
                ItemValue::from_bytes(vec![i as u8; 1024]),
            )
        })
        .collect();
    let (key, token) = seed_locked(&h, &all, LONG).await?;
    let delta = Delta::new().with_set("item050", ItemValue::from_bytes(vec![0xAA; 1024]));
    h.store().commit(&key, token, &delta, LONG).await?;
    let snap = found(&h, &key).await?;
    check!(
        snap.items.len() == 100,
        "100 items must stay 100, got {}",
        snap.items.len()
    );
    let first_byte = |name: &str| {
        snap.items
            .get(name)
            .and_then(|v| v.as_bytes().first().copied())
    };
    expect(
        first_byte("item050"),
        Some(0xAA),
        "the changed item is stored",
    )?;
    expect(
        first_byte("item051"),
        Some(51),
        "unchanged items are untouched",
    )
}

pub(super) async fn clearing_all_items_keeps_session(h: Harness) -> Outcome {
    let (key, token) = seed_a1_locked(&h, LONG).await?;
    let cleared = Delta::new().with_cleared();
    h.store().commit(&key, token, &cleared, LONG).await?;
    let snap = found(&h, &key).await.map_err(|_| {
        super::Failed::new(
            "a session whose items were all removed still exists (the Redis provider lost it)",
        )
    })?;
    check!(snap.items.is_empty(), "no items after clearing");
    Ok(())
}
