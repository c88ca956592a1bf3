//! Unit tests of the APISIX limit plugins' mapping.
use super::*;

fn conf(yaml: &str) -> Value {
    serde_yaml_ng::from_str(yaml).unwrap()
}

#[test]
fn keys_map_to_templates_or_fall_back_to_the_client_address() {
    let mut out = Vec::new();
    let k = |y: &str, out: &mut Vec<Unmapped>| key(&conf(y), "r", out);
    assert_eq!(k("{}", &mut out).as_deref(), Some("$remote_addr"));
    assert_eq!(
        k("{key: consumer_name}", &mut out).as_deref(),
        Some("$consumer_name")
    );
    assert_eq!(
        k("{key: http_x_team}", &mut out).as_deref(),
        Some("$http_x_team")
    );
    assert_eq!(k("{key: x, key_type: constant}", &mut out), None);
    assert_eq!(
        k(
            "{key: '$consumer_name ${http_x_a}', key_type: var_combination}",
            &mut out
        )
        .as_deref(),
        Some("$consumer_name $http_x_a")
    );
    assert_eq!(
        k(
            "{key: '${remote_addr}x', key_type: var_combination}",
            &mut out
        )
        .as_deref(),
        Some("$${remote_addr}x"),
        "braces kept (escaped from env substitution) when a name character follows"
    );
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        k("{key: server_addr}", &mut out).as_deref(),
        Some("$remote_addr")
    );
    assert_eq!(out.len(), 1);
    assert!(out[0].what.contains("server_addr"));
}

#[test]
fn limit_count_rules_and_defaults() {
    let (mut store, mut out) = (Store::default(), Vec::new());
    let place = Place {
        at: "routes[id=1]",
        shared: Some("service-1"),
    };
    let got = rules(
        "limit-count",
        &conf("{count: 5, time_window: 1.5, sync_interval: 0.2, policy: redis, redis_host: h}"),
        &place,
        &mut store,
        &mut out,
    )
    .unwrap();
    let r = serde_yaml_ng::to_string(&got[0]).unwrap();
    assert!(r.contains("time_window: 1500ms"), "{r}");
    assert!(r.contains("group: service-1-limit-count"), "{r}");
    assert!(
        r.contains("rejected_code: 503"),
        "APISIX's default is kept: {r}"
    );
    assert!(r.contains("show_limit_quota_header: true"), "{r}");
    let section = serde_yaml_ng::to_string(&store.section()).unwrap();
    assert!(section.contains("url: redis://h:6379/0"), "{section}");
    assert!(section.contains("sync_interval: 200ms"), "{section}");
    assert!(rules("cors", &conf("{}"), &place, &mut store, &mut out).is_none());
}
