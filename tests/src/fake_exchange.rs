//! An exchange speaking docs/exchange-protocol.md, on wiremock: idempotent on
//! `client_order_id`, recording every call, with scripted failures.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rust_decimal::Decimal;
use serde_json::{Value, json};
use wiremock::matchers::any;
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// What the exchange does with one `POST /orders`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behavior {
    /// Fills it (or returns the earlier fill of the same id).
    Fill,
    /// Answers 500 without taking the order.
    FailBeforeFill,
    /// Takes and fills the order, then answers 503: the reply is lost.
    FailAfterFill,
    /// Fills it but answers only after this long (the client times out).
    FillSlowly(Duration),
    /// Refuses it for good with 400.
    Refuse,
    /// Answers this status with an error body, without taking the order
    /// (401, 403, 404, 405: our configuration; 307: a redirect; 422: a refusal).
    Answer(u16),
    /// Takes the order and ends it in this final, unfilled status
    /// (`rejected`, `canceled`, `expired`), answered with 200.
    EndUnfilled(&'static str),
    /// Fills it but answers 409, as an exchange that already had the id does.
    FillThenConflict,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    pub client_order_id: String,
    pub symbol: String,
    pub quantity: Decimal,
    pub exchange_order_id: String,
}

#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub method: String,
    pub client_order_id: String,
}

#[derive(Default)]
struct State {
    fills: HashMap<String, Fill>,
    /// Orders it took and ended unfilled: id → (symbol, quantity, status).
    unfilled: HashMap<String, (String, Decimal, &'static str)>,
    /// Fills in the order they happened.
    fill_order: Vec<String>,
    calls: Vec<Call>,
    /// Behaviors for the next POSTs, then `default`.
    script: VecDeque<Behavior>,
    default: Option<Behavior>,
    /// POSTs that were malformed.
    bad_requests: Vec<String>,
    /// Answer 500 to the first this many POSTs of every client order id.
    failing_first_posts: usize,
    posts_by_id: HashMap<String, usize>,
}

#[derive(Clone)]
struct Responder(Arc<Mutex<State>>);

pub struct FakeExchange {
    server: MockServer,
    state: Arc<Mutex<State>>,
}

impl FakeExchange {
    pub async fn start() -> FakeExchange {
        FakeExchange::serve(MockServer::start().await).await
    }

    /// On a given port of 127.0.0.1 (a deployed stack was told where it is).
    pub async fn start_on(port: u16) -> FakeExchange {
        let listener = std::net::TcpListener::bind(("127.0.0.1", port)).unwrap();
        FakeExchange::serve(MockServer::builder().listener(listener).start().await).await
    }

    async fn serve(server: MockServer) -> FakeExchange {
        let state = Arc::new(Mutex::new(State::default()));
        Mock::given(any()).respond_with(Responder(Arc::clone(&state))).mount(&server).await;
        FakeExchange { server, state }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    /// The next POSTs behave like this, in order; then `Fill` (or the default).
    pub fn script(&self, behaviors: impl IntoIterator<Item = Behavior>) {
        self.state.lock().unwrap().script.extend(behaviors);
    }

    /// Every client order id's first `posts` POSTs are answered 500 without
    /// taking the order; later ones follow the script or the default.
    pub fn fail_first_posts_of_each_order(&self, posts: usize) {
        self.state.lock().unwrap().failing_first_posts = posts;
    }

    pub fn set_default(&self, behavior: Behavior) {
        self.state.lock().unwrap().default = Some(behavior);
    }

    /// Fills in the order they happened.
    pub fn fills(&self) -> Vec<Fill> {
        let state = self.state.lock().unwrap();
        state.fill_order.iter().map(|id| state.fills[id].clone()).collect()
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state.lock().unwrap().calls.clone()
    }

    pub fn bad_requests(&self) -> Vec<String> {
        self.state.lock().unwrap().bad_requests.clone()
    }

    /// POSTs of a client order id that were sent again without a GET of it
    /// since the previous POST: the protocol forbids them.
    pub fn resends_without_lookup(&self) -> Vec<String> {
        let mut last: HashMap<&str, &str> = HashMap::new();
        let mut violations = Vec::new();
        let state = self.state.lock().unwrap();
        for call in &state.calls {
            if call.method == "POST" && last.get(call.client_order_id.as_str()) == Some(&"POST") {
                violations.push(call.client_order_id.clone());
            }
            last.insert(&call.client_order_id, &call.method);
        }
        violations
    }

    /// Waits until there are `count` fills (or panics after 20 s).
    pub async fn wait_for_fills(&self, count: usize) -> Vec<Fill> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let fills = self.fills();
            if fills.len() >= count {
                return fills;
            }
            assert!(Instant::now() < deadline, "only {} of {count} fills arrived", fills.len());
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Respond for Responder {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut state = self.0.lock().unwrap();
        let path = request.url.path().to_owned();
        match (request.method.as_str(), path.as_str()) {
            ("POST", "/orders") => state.post(request),
            ("GET", path) if path.starts_with("/orders/") => {
                let id = path.trim_start_matches("/orders/").to_owned();
                state.calls.push(Call { at: Instant::now(), method: "GET".into(), client_order_id: id.clone() });
                match (state.fills.get(&id), state.unfilled.get(&id)) {
                    (Some(fill), _) => ResponseTemplate::new(200).set_body_json(order_json(fill)),
                    (None, Some((symbol, quantity, status))) => {
                        ResponseTemplate::new(200).set_body_json(unfilled_json(&id, symbol, *quantity, status))
                    }
                    (None, None) => ResponseTemplate::new(404).set_body_json(json!({"error": "unknown order"})),
                }
            }
            _ => ResponseTemplate::new(404),
        }
    }
}

impl State {
    fn post(&mut self, request: &Request) -> ResponseTemplate {
        let body: Value = serde_json::from_slice(&request.body).unwrap_or(Value::Null);
        let field = |name: &str| body[name].as_str().map(str::to_owned);
        let (Some(id), Some(symbol), Some(quantity)) = (field("client_order_id"), field("symbol"), field("quantity"))
        else {
            self.bad_requests.push(String::from_utf8_lossy(&request.body).into_owned());
            return ResponseTemplate::new(400).set_body_json(json!({"error": "bad order"}));
        };
        let valid = body["side"] == "buy" && body["type"] == "market";
        let Ok(quantity) = quantity.parse::<Decimal>() else {
            self.bad_requests.push(body.to_string());
            return ResponseTemplate::new(400);
        };
        if !valid {
            self.bad_requests.push(body.to_string());
            return ResponseTemplate::new(400);
        }
        self.calls.push(Call { at: Instant::now(), method: "POST".into(), client_order_id: id.clone() });
        let posts = self.posts_by_id.entry(id.clone()).or_default();
        *posts += 1;
        if *posts <= self.failing_first_posts {
            return ResponseTemplate::new(500).set_body_json(json!({"error": "try later"}));
        }
        let behavior = self.script.pop_front().or(self.default).unwrap_or(Behavior::Fill);
        if behavior == Behavior::Refuse {
            return ResponseTemplate::new(400).set_body_json(json!({"error": "symbol halted"}));
        }
        if behavior == Behavior::FailBeforeFill {
            return ResponseTemplate::new(500).set_body_json(json!({"error": "try later"}));
        }
        if let Behavior::Answer(status) = behavior {
            let mut answer = ResponseTemplate::new(status).set_body_json(json!({"error": "not for you"}));
            if (300..400).contains(&status) {
                answer = answer.insert_header("location", "/elsewhere");
            }
            return answer;
        }
        if let Behavior::EndUnfilled(status) = behavior {
            let (symbol, quantity, status) =
                self.unfilled.entry(id.clone()).or_insert((symbol, quantity, status)).clone();
            return ResponseTemplate::new(200).set_body_json(unfilled_json(&id, &symbol, quantity, status));
        }
        let next = self.fills.len() + 1;
        let fill = self.fills.entry(id.clone()).or_insert_with(|| Fill {
            client_order_id: id.clone(),
            symbol,
            quantity,
            exchange_order_id: format!("EX-{next}"),
        });
        let reply = order_json(fill);
        if !self.fill_order.contains(&id) {
            self.fill_order.push(id);
        }
        match behavior {
            Behavior::FailAfterFill => ResponseTemplate::new(503),
            Behavior::FillThenConflict => ResponseTemplate::new(409).set_body_json(json!({"error": "duplicate"})),
            Behavior::FillSlowly(delay) => ResponseTemplate::new(201).set_body_json(reply).set_delay(delay),
            _ => ResponseTemplate::new(201).set_body_json(reply),
        }
    }
}

fn unfilled_json(id: &str, symbol: &str, quantity: Decimal, status: &str) -> Value {
    json!({
        "exchange_order_id": format!("EX-{id}"),
        "client_order_id": id,
        "symbol": symbol,
        "side": "buy",
        "type": "market",
        "quantity": quantity.normalize().to_string(),
        "status": status,
    })
}

fn order_json(fill: &Fill) -> Value {
    json!({
        "exchange_order_id": fill.exchange_order_id,
        "client_order_id": fill.client_order_id,
        "symbol": fill.symbol,
        "side": "buy",
        "type": "market",
        "quantity": fill.quantity.normalize().to_string(),
        "status": "filled",
    })
}
