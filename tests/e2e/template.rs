//! What `sam validate --lint` cannot know: that `template.yaml` deploys what
//! the code expects (the table and queue definitions `orders-local --backend
//! aws` creates, the runtime, architecture, event source settings).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;

use serde_norway::Value;
use shared::adapters::dynamodb::item::{OPEN_BATCHES_INDEX, OPEN_PK, OPEN_SK, PK, SK};
use shared::adapters::dynamodb::schema::{TABLE_SCHEMA, TTL_ATTRIBUTE};
use shared::adapters::sqs::{MAX_RECEIVE_COUNT, VISIBILITY_TIMEOUT_SECONDS};
use shared::config::{AwsResources, ServiceConfig, SettleConfig, wait_policy_from_lookup};
use shared::telemetry::LOG_VARIABLES;

/// `template.yaml`, parsed (CloudFormation's `!Ref`, `!GetAtt`, `!Sub` as tagged values).
pub(crate) fn template() -> Value {
    let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../template.yaml")).unwrap();
    serde_norway::from_str(&text).unwrap()
}

fn resource<'a>(template: &'a Value, name: &str) -> &'a Value {
    &template["Resources"][name]["Properties"]
}

fn number(value: &Value) -> u64 {
    value.as_u64().or_else(|| value.as_str().and_then(|s| s.parse().ok())).unwrap_or_else(|| panic!("{value:?}"))
}

fn strings(value: &Value) -> Vec<String> {
    value.as_sequence().unwrap().iter().map(|v| v.as_str().unwrap().to_owned()).collect()
}

#[test]
fn functions_run_the_workspace_binaries_on_provided_al2023_arm64_by_default() {
    let template = template();
    let globals = &template["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(template["Parameters"]["Architecture"]["Default"], "arm64");
    assert_eq!(globals["Tracing"], "Active");
    assert_eq!(globals["LoggingConfig"]["LogFormat"], "JSON");
    for (function, binary) in
        [("PlaceOrderFunction", "place-order"), ("SettleFunction", "settle"), ("ReconcilerFunction", "reconciler")]
    {
        let metadata = &template["Resources"][function]["Metadata"];
        assert_eq!(metadata["BuildMethod"], "rust-cargolambda", "{function}");
        assert_eq!(metadata["BuildProperties"]["Binary"], binary, "{function}");
    }
}

#[test]
fn the_settle_function_reports_partial_batch_failures() {
    let template = template();
    let event = &resource(&template, "SettleFunction")["Events"]["SettleQueue"];
    assert_eq!(event["Type"], "SQS");
    assert_eq!(strings(&event["Properties"]["FunctionResponseTypes"]), ["ReportBatchItemFailures"]);
    assert!(number(&event["Properties"]["BatchSize"]) <= 10);
}

/// The reconciler's runs overlap: each sweeps for longer than the minute
/// between two, and its timeout leaves room for its margin after that, so
/// the pool shards are swept around the clock.
#[test]
fn the_reconcilers_runs_overlap_and_end_within_their_timeout() {
    let template = template();
    let timeout = number(&resource(&template, "ReconcilerFunction")["Timeout"]) as f64;
    let (sweeps, margin) = (reconciler::LONGEST.as_secs_f64(), reconciler::MARGIN.as_secs_f64());
    assert!(sweeps > 60.0, "a run sweeps {sweeps} s of the minute: a gap between runs");
    assert!(timeout >= sweeps + margin, "timeout {timeout} s < {sweeps} s of sweeping + {margin} s");
}

#[test]
fn the_queue_outlasts_six_settle_timeouts_and_matches_what_orders_local_creates() {
    let template = template();
    let timeout = number(&resource(&template, "SettleFunction")["Timeout"]);
    let queue = resource(&template, "SettleQueue");
    let visibility = number(&queue["VisibilityTimeout"]);
    assert!(visibility >= 6 * timeout, "visibility {visibility} s < 6 × settle timeout {timeout} s");
    assert_eq!(visibility, u64::from(VISIBILITY_TIMEOUT_SECONDS));
    assert_eq!(number(&queue["RedrivePolicy"]["maxReceiveCount"]), u64::from(MAX_RECEIVE_COUNT));
}

#[test]
fn the_table_is_the_one_the_adapter_uses() {
    let template = template();
    let table = resource(&template, "Table");
    let keys = |schema: &Value| -> Vec<(String, String)> {
        schema
            .as_sequence()
            .unwrap()
            .iter()
            .map(|k| (k["AttributeName"].as_str().unwrap().to_owned(), k["KeyType"].as_str().unwrap().to_owned()))
            .collect()
    };
    let pair =
        |hash: &str, range: &str| vec![(hash.to_owned(), "HASH".to_owned()), (range.to_owned(), "RANGE".to_owned())];
    assert_eq!(keys(&table["KeySchema"]), pair(PK, SK));
    // Each index: its name, its keys, what it projects.
    type Index = (String, Vec<(String, String)>, String);
    let indexes: Vec<Index> = table["GlobalSecondaryIndexes"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|i| {
            let projection = i["Projection"]["ProjectionType"].as_str().unwrap().to_owned();
            (i["IndexName"].as_str().unwrap().to_owned(), keys(&i["KeySchema"]), projection)
        })
        .collect();
    let expected: Vec<Index> = TABLE_SCHEMA
        .indexes
        .iter()
        .map(|i| (i.name.to_owned(), pair(i.pk, i.sk), i.projection.as_type().as_str().to_owned()))
        .collect();
    assert_eq!(indexes, expected);
    assert_eq!(
        expected.iter().map(|(name, keys, _)| (name.clone(), keys.clone())).collect::<Vec<_>>(),
        vec![(OPEN_BATCHES_INDEX.to_owned(), pair(OPEN_PK, OPEN_SK))]
    );
    assert_eq!(table["TimeToLiveSpecification"]["AttributeName"], TTL_ATTRIBUTE);
    assert_eq!(table["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"], true);
    assert_eq!(table["BillingMode"], "PAY_PER_REQUEST");
}

/// The variables a configuration reads, recorded by running its real
/// parser on a lookup that answers only the required ones.
fn reads<T, E>(parse: impl FnOnce(&dyn Fn(&str) -> Option<String>) -> Result<T, E>) -> BTreeSet<String> {
    let seen = std::cell::RefCell::new(BTreeSet::new());
    let lookup = |var: &str| {
        seen.borrow_mut().insert(var.to_owned());
        match var {
            "EXCHANGE_URL" => Some("https://exchange.example".to_owned()),
            "TABLE_NAME" => Some("orders".to_owned()),
            "SETTLE_QUEUE_URL" => Some("https://sqs.example/q".to_owned()),
            // Optional, set so that every variable of the policy is read.
            "POOL_MAX_WAIT" => Some("15m".to_owned()),
            "POOL_WAIT_POLICY" => Some("top-up".to_owned()),
            "HOUSE_USER_ID" => Some("house".to_owned()),
            _ => None,
        }
    };
    assert!(parse(&lookup).is_ok(), "the configuration did not parse with the required variables set");
    seen.into_inner()
}

/// What each function's `main` reads: its configurations and its logging.
fn function_reads() -> Vec<(&'static str, BTreeSet<String>)> {
    let service = || reads(|l| ServiceConfig::from_lookup(l));
    let settle = || reads(|l| SettleConfig::from_lookup(l));
    let resources = || reads(|l| AwsResources::from_lookup(l));
    let wait = || reads(|l| wait_policy_from_lookup(l));
    let logging: BTreeSet<String> = LOG_VARIABLES.iter().map(|v| (*v).to_owned()).collect();
    [
        ("PlaceOrderFunction", vec![service(), resources()]),
        ("SettleFunction", vec![settle(), resources()]),
        ("ReconcilerFunction", vec![service(), resources(), wait()]),
    ]
    .into_iter()
    .map(|(function, parts)| (function, parts.into_iter().flatten().chain(logging.iter().cloned()).collect()))
    .collect()
}

#[test]
fn each_function_gets_exactly_the_configuration_its_main_reads() {
    let template = template();
    let names = |value: &Value| -> Vec<String> {
        value.as_mapping().unwrap().keys().map(|k| k.as_str().unwrap().to_owned()).collect()
    };
    let globals = names(&template["Globals"]["Function"]["Environment"]["Variables"]);
    for (function, read) in function_reads() {
        let own = names(&resource(&template, function)["Environment"]["Variables"]);
        let set: BTreeSet<String> = globals.iter().chain(&own).cloned().collect();
        // Lambda sets the log level itself, from the function's logging configuration.
        let expected: BTreeSet<String> = read.into_iter().filter(|v| v != "AWS_LAMBDA_LOG_LEVEL").collect();
        assert_eq!(set, expected, "{function}: template.yaml sets (left) what its main reads (right)");
    }
}

#[test]
fn the_readme_lists_every_variable_a_function_reads() {
    let readme = include_str!("../../README.md");
    for (function, read) in function_reads() {
        for variable in read {
            assert!(
                readme.contains(&format!("`{variable}`")),
                "the README's configuration table lacks {variable} ({function})"
            );
        }
    }
}

/// A metric as the template names it: its name, and its dimension (name,
/// value) if it has one.
type Named = (String, Option<(String, String)>);

/// Every metric of the service's namespace the alarms and the dashboard
/// name, with where each is named.
fn metrics_named(template: &Value) -> Vec<(String, Named)> {
    let mut named = Vec::new();
    let resources = template["Resources"].as_mapping().unwrap();
    let dimension = |dimensions: &Value| -> Option<(String, String)> {
        let first = dimensions.as_sequence()?.first()?;
        Some((first["Name"].as_str()?.to_owned(), first["Value"].as_str()?.to_owned()))
    };
    for (name, resource) in resources {
        let name = name.as_str().unwrap();
        let properties = &resource["Properties"];
        match resource["Type"].as_str().unwrap() {
            "AWS::CloudWatch::Alarm" if properties["Namespace"].as_str() == Some(shared::metrics::NAMESPACE) => {
                let metric = properties["MetricName"].as_str().unwrap().to_owned();
                named.push((name.to_owned(), (metric, dimension(&properties["Dimensions"]))));
            }
            "AWS::CloudWatch::Alarm" => {
                for query in properties["Metrics"].as_sequence().into_iter().flatten() {
                    let metric = &query["MetricStat"]["Metric"];
                    if metric["Namespace"].as_str() == Some(shared::metrics::NAMESPACE) {
                        let named_metric = metric["MetricName"].as_str().unwrap().to_owned();
                        named.push((name.to_owned(), (named_metric, dimension(&metric["Dimensions"]))));
                    }
                }
            }
            "AWS::CloudWatch::Dashboard" => {
                let Value::Tagged(body) = &properties["DashboardBody"] else { panic!("the dashboard body is a !Sub") };
                let text = body.value.as_str().unwrap();
                // `${…}` are CloudFormation's; what is left is the JSON.
                let mut json = String::new();
                let mut rest = text;
                while let Some(start) = rest.find("${") {
                    json.push_str(&rest[..start]);
                    json.push('X');
                    rest = &rest[start + rest[start..].find('}').unwrap() + 1..];
                }
                json.push_str(rest);
                let body: serde_json::Value = serde_json::from_str(&json).unwrap();
                for widget in body["widgets"].as_array().unwrap() {
                    for line in widget["properties"]["metrics"].as_array().unwrap() {
                        let parts: Vec<&str> = line.as_array().unwrap().iter().filter_map(|v| v.as_str()).collect();
                        let expression = line[0]["expression"].as_str();
                        let metric = match (parts.as_slice(), expression) {
                            ([namespace, metric, rest @ ..], _) if *namespace == shared::metrics::NAMESPACE => {
                                let dimension = match rest {
                                    [name, value] => Some(((*name).to_owned(), (*value).to_owned())),
                                    _ => None,
                                };
                                ((*metric).to_owned(), dimension)
                            }
                            (_, Some(search)) if search.starts_with("SEARCH(") => {
                                let metric = search.split("MetricName=\"").nth(1).unwrap().split('"').next().unwrap();
                                let dimension = search.split(',').nth(1).unwrap().split('}').next().unwrap();
                                (metric.to_owned(), Some((dimension.to_owned(), "*".to_owned())))
                            }
                            _ => continue,
                        };
                        named.push((format!("{name}: {}", widget["properties"]["title"]), metric));
                    }
                }
            }
            _ => {}
        }
    }
    named
}

/// Every metric an alarm or a dashboard widget names is one the code emits,
/// with a dimension the code gives it and a value it takes: a typo there is
/// a widget that stays empty and an alarm that never fires.
#[test]
fn the_dashboard_and_alarms_name_only_metrics_the_code_emits() {
    let catalogue = shared::metrics::catalogue();
    for (place, (metric, dimension)) in metrics_named(&template()) {
        let Some((_, label)) = catalogue.iter().find(|(name, _)| *name == metric) else {
            panic!("{place} names {metric}, which the code does not emit");
        };
        match (dimension, label) {
            (None, _) => {}
            (Some((name, value)), Some((label, values))) => {
                assert_eq!(&name, label, "{place}: {metric} has the dimension {label}, not {name}");
                if let Some(values) = values {
                    assert!(values.contains(&value.as_str()), "{place}: {metric} never has {name}={value}");
                }
            }
            (Some((name, _)), None) => panic!("{place}: {metric} has no dimension, yet {name} is named"),
        }
    }
}

/// And the reverse: every metric the code emits is on the dashboard, each
/// of its values for the ones with a fixed list; and the alarms watch what
/// needs a person.
#[test]
fn the_dashboard_shows_every_metric_and_the_alarms_watch_what_needs_a_person() {
    let named = metrics_named(&template());
    let on_dashboard: Vec<&Named> =
        named.iter().filter(|(place, _)| place.starts_with("OperationsDashboard")).map(|(_, m)| m).collect();
    for (metric, label) in shared::metrics::catalogue() {
        match label {
            Some((label, Some(values))) => {
                for value in values {
                    let wanted = (metric.to_owned(), Some((label.to_owned(), value.to_owned())));
                    assert!(on_dashboard.contains(&&wanted), "the dashboard does not show {metric} {label}={value}");
                }
            }
            _ => assert!(on_dashboard.iter().any(|(name, _)| name == metric), "the dashboard does not show {metric}"),
        }
    }
    let alarmed = |alarm: &str, metric: &str, dimension: Option<(&str, &str)>| {
        let wanted = (metric.to_owned(), dimension.map(|(n, v)| (n.to_owned(), v.to_owned())));
        assert!(named.iter().any(|(place, m)| place == alarm && *m == wanted), "{alarm} does not watch {wanted:?}");
    };
    alarmed("OutcomeUnknownAlarm", "problems_answered", Some(("type", "outcome-unknown")));
    alarmed("MisconfiguredExchangeAlarm", "settle_outcomes", Some(("outcome", "misconfigured")));
    alarmed("BusyRateAlarm", "problems_answered", Some(("type", "busy")));
    alarmed("OldestPendingAlarm", "oldest_pending_order_any_coin_seconds", None);
    alarmed("HouseShortAlarm", "pool_top_ups", Some(("outcome", "house_short")));
    alarmed("HouseLowBalanceAlarm", "house_balance_usd", None);
}
