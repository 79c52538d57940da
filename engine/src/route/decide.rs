//! The routing decision as a pure function of facts the engine gathers: which route a request
//! takes ([`decide`]) and what the probe's verdict does to an `Auto` request ([`verdict`]). The
//! engine thread (`api::routing`) gathers the facts and carries the decision out; nothing here
//! touches a model, a network or a channel, so every rule has a unit test.

use super::{Route, RouteMode};

/// What the router knows about a request when it arrives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facts {
    /// A cloud endpoint is configured.
    pub cloud: bool,
    /// A local model is loaded.
    pub model: bool,
    /// The prompt is token ids (only the local model can read them).
    pub token_prompt: bool,
    /// The prompt's length in the local model's tokens, or why the local model cannot take it
    /// (no template, a template error). `None` where it was not needed.
    pub prompt: Option<Result<usize, String>>,
    /// The local context a request of this size gets (positions).
    pub context: usize,
    /// A router probe fits the local model.
    pub probe: bool,
}

/// Where a request goes.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Answer locally; with `await_probe`, prefill first and let the probe's [`verdict`] decide.
    Local { route: Route, await_probe: bool },
    /// Ask the cloud; with `fallback`, a failure before the first token answers locally instead.
    Cloud { route: Route, fallback: bool },
    /// Refuse the request (the reason is its error message).
    Refuse(String),
}

/// Whether `decide` needs `Facts::prompt` for this mode and these facts (the prompt is then
/// prepared once, before deciding, and the local answer reuses it).
pub fn needs_prompt(mode: RouteMode, facts: &Facts) -> bool {
    mode == RouteMode::Auto && facts.cloud && facts.model && !facts.token_prompt
}

/// The route of a request in `mode`.
pub fn decide(mode: RouteMode, facts: &Facts) -> Decision {
    let local = |why: &str, await_probe| Decision::Local {
        route: Route::local(why),
        await_probe,
    };
    let cloud = |why: String, fallback| Decision::Cloud {
        route: Route::cloud(why),
        fallback,
    };
    match mode {
        RouteMode::Local => local("local only", false),
        RouteMode::Cloud if facts.cloud => cloud("cloud only".into(), false),
        RouteMode::Cloud => {
            Decision::Refuse("the route is cloud only, but no cloud endpoint is set".into())
        }
        RouteMode::Auto if !facts.cloud => local("no cloud endpoint is set", false),
        RouteMode::Auto if !facts.model => cloud("no local model is loaded".into(), true),
        RouteMode::Auto if facts.token_prompt => local("token prompts stay local", false),
        RouteMode::Auto => match &facts.prompt {
            Some(Ok(tokens)) if *tokens >= facts.context => cloud(
                format!(
                    "prompt exceeds local context ({} > {} tokens)",
                    group(*tokens),
                    group(facts.context)
                ),
                true,
            ),
            // A prompt the local model cannot take (no template...) is the cloud's.
            Some(Err(why)) => cloud(
                format!("the local model cannot take this prompt ({why})"),
                false,
            ),
            _ if !facts.probe => local(
                "no router probe for this model (fit one with `hearth fit-router`)",
                false,
            ),
            _ => local("awaiting the probe", true),
        },
    }
}

/// The probe's verdict on an `Auto` request at the end of its prefill: its `risk` (probability
/// of a wrong local answer) against the probe's `threshold`.
pub fn verdict(risk: f64, threshold: f64) -> Decision {
    if risk < threshold {
        Decision::Local {
            route: Route {
                risk: Some(risk),
                ..Route::local(format!("confident (risk {risk:.2} < {threshold:.2})"))
            },
            await_probe: false,
        }
    } else {
        Decision::Cloud {
            route: Route {
                risk: Some(risk),
                ..Route::cloud(format!(
                    "local model unsure (risk {risk:.2} >= {threshold:.2})"
                ))
            },
            fallback: true,
        }
    }
}

/// `12345` as "12,345".
pub fn group(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::route::Target;

    fn facts() -> Facts {
        Facts {
            cloud: true,
            model: true,
            token_prompt: false,
            prompt: Some(Ok(100)),
            context: 4096,
            probe: true,
        }
    }

    fn route(d: &Decision) -> (Target, &str, bool) {
        match d {
            Decision::Local { route, await_probe } => (route.target, &route.reason, *await_probe),
            Decision::Cloud { route, fallback } => (route.target, &route.reason, *fallback),
            Decision::Refuse(why) => panic!("refused: {why}"),
        }
    }

    #[test]
    fn local_never_asks_the_cloud_and_cloud_needs_an_endpoint() {
        let none = Facts {
            cloud: false,
            ..facts()
        };
        for f in [facts(), none.clone()] {
            assert_eq!(
                route(&decide(RouteMode::Local, &f)),
                (Target::Local, "local: local only", false)
            );
        }
        assert_eq!(
            route(&decide(RouteMode::Cloud, &facts())),
            (Target::Cloud, "cloud: cloud only", false)
        );
        assert_eq!(
            decide(RouteMode::Cloud, &none),
            Decision::Refuse("the route is cloud only, but no cloud endpoint is set".into())
        );
        assert!(!needs_prompt(RouteMode::Local, &facts()));
        assert!(!needs_prompt(RouteMode::Cloud, &facts()));
    }

    #[test]
    fn auto_goes_local_without_an_endpoint_or_with_token_prompts_and_cloud_without_a_model() {
        let auto = |f: Facts| route(&decide(RouteMode::Auto, &f)).0;
        let f = Facts {
            cloud: false,
            ..facts()
        };
        assert!(!needs_prompt(RouteMode::Auto, &f));
        assert_eq!(
            route(&decide(RouteMode::Auto, &f)),
            (Target::Local, "local: no cloud endpoint is set", false)
        );
        let f = Facts {
            model: false,
            prompt: None,
            ..facts()
        };
        assert!(!needs_prompt(RouteMode::Auto, &f));
        assert_eq!(
            route(&decide(RouteMode::Auto, &f)),
            (Target::Cloud, "cloud: no local model is loaded", true)
        );
        let f = Facts {
            token_prompt: true,
            prompt: None,
            ..facts()
        };
        assert_eq!(auto(f), Target::Local);
        assert!(needs_prompt(RouteMode::Auto, &facts()));
    }

    #[test]
    fn auto_sends_what_the_local_model_cannot_take_to_the_cloud() {
        let long = Facts {
            prompt: Some(Ok(12_345)),
            context: 4096,
            ..facts()
        };
        assert_eq!(
            route(&decide(RouteMode::Auto, &long)),
            (
                Target::Cloud,
                "cloud: prompt exceeds local context (12,345 > 4,096 tokens)",
                true
            )
        );
        // Exactly the context leaves no room for an answer.
        let full = Facts {
            prompt: Some(Ok(4096)),
            ..facts()
        };
        assert_eq!(route(&decide(RouteMode::Auto, &full)).0, Target::Cloud);
        let untemplated = Facts {
            prompt: Some(Err("no chat template".into())),
            ..facts()
        };
        assert_eq!(
            route(&decide(RouteMode::Auto, &untemplated)),
            (
                Target::Cloud,
                "cloud: the local model cannot take this prompt (no chat template)",
                false
            )
        );
    }

    #[test]
    fn auto_waits_for_the_probe_where_one_fits_and_its_verdict_decides() {
        assert_eq!(
            route(&decide(RouteMode::Auto, &facts())),
            (Target::Local, "local: awaiting the probe", true)
        );
        let f = Facts {
            probe: false,
            ..facts()
        };
        assert_eq!(
            route(&decide(RouteMode::Auto, &f)),
            (
                Target::Local,
                "local: no router probe for this model (fit one with `hearth fit-router`)",
                false
            )
        );
        assert_eq!(
            route(&verdict(0.2, 0.61)),
            (Target::Local, "local: confident (risk 0.20 < 0.61)", false)
        );
        let unsure = verdict(0.82, 0.61);
        assert_eq!(
            route(&unsure),
            (
                Target::Cloud,
                "cloud: local model unsure (risk 0.82 >= 0.61)",
                true
            )
        );
        let Decision::Cloud { route, .. } = unsure else {
            unreachable!()
        };
        assert_eq!(route.risk, Some(0.82));
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(group(0), "0");
        assert_eq!(group(999), "999");
        assert_eq!(group(1000), "1,000");
        assert_eq!(group(1_234_567), "1,234,567");
    }
}
