//! Target expressions: which hosts a highstate or deploy is for.
//!
//! ```text
//! expression := term ("or" term)*
//! term       := factor ("and" factor)*
//! factor     := "not" factor | "(" expression ")" | matcher
//! matcher    := GLOB                  a host id glob: web-*, db-[12]
//!             | GLOB,GLOB,...         any of these host ids or globs
//!             | "id:" GLOB            the same, spelled out
//!             | "label:" KEY=GLOB     a label from the host's configuration or join token
//!             | "fact:" NAME=GLOB     a fact: hostname, os, kernel, docker, cpus
//!             | "role:" ROLE          hosts the roles file assigns ROLE
//! ```
//!
//! Words are separated by spaces; `and`, `or` and `not` bind in that order from loosest to
//! tightest, as in Salt's compound matcher, and parentheses group. Label and fact values are
//! globs, compared without regard to case; `fact:os` matches the OS's id (`debian`) or its full
//! name (`Debian GNU/Linux 12 (bookworm)`).

use std::collections::BTreeMap;
use std::fmt;

use glob::{MatchOptions, Pattern};

use crate::host::Facts;
use crate::names::RoleName;

/// A parsed target expression.
#[derive(Debug, Clone, PartialEq)]
pub struct Target {
    text: String,
    expression: Expression,
}

#[derive(Debug, Clone, PartialEq)]
enum Expression {
    Or(Vec<Expression>),
    And(Vec<Expression>),
    Not(Box<Expression>),
    Ids(Vec<Pattern>),
    Label { key: String, value: Pattern },
    Fact { fact: Fact, value: Pattern },
    Role(RoleName),
}

/// The facts a target can match.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fact {
    Hostname,
    Os,
    Kernel,
    Docker,
    Cpus,
}

const FACTS: &str = "hostname, os, kernel, docker, cpus";

impl Fact {
    fn parse(name: &str) -> Option<Self> {
        match name {
            "hostname" => Some(Fact::Hostname),
            "os" => Some(Fact::Os),
            "kernel" => Some(Fact::Kernel),
            "docker" | "docker_version" => Some(Fact::Docker),
            "cpus" => Some(Fact::Cpus),
            _ => None,
        }
    }
}

/// What a target expression is matched against.
#[derive(Debug, Clone, Copy)]
pub struct HostView<'a> {
    pub id: &'a str,
    pub facts: &'a Facts,
    /// The host's labels: its configuration's, overridden by its join token's.
    pub labels: &'a BTreeMap<String, String>,
    /// The roles the roles file assigns it.
    pub roles: &'a [&'a RoleName],
}

/// A target expression that cannot be parsed; `position` is the byte offset of the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("target {text:?}: {message} (at character {})", position + 1)]
pub struct TargetError {
    pub text: String,
    pub position: usize,
    pub message: String,
}

/// How deeply `not` and parentheses may nest. The parser recurses once per level, and the master
/// parses expressions that arrive over the network: without a bound, a long enough run of `(`
/// overflows the stack of the thread serving it and aborts the master. No real target comes
/// near this.
const MAX_NESTING: usize = 64;

const CASE_INSENSITIVE: MatchOptions = MatchOptions {
    case_sensitive: false,
    require_literal_separator: false,
    require_literal_leading_dot: false,
};

impl Target {
    /// Parses a target expression.
    pub fn parse(text: &str) -> Result<Self, TargetError> {
        let tokens = tokenize(text)?;
        if tokens.is_empty() {
            return Err(error(
                text,
                0,
                "is empty; give a host glob or an expression",
            ));
        }
        let mut parser = Parser {
            text,
            tokens,
            next: 0,
            depth: 0,
        };
        let expression = parser.expression()?;
        if let Some(token) = parser.peek() {
            return Err(error(
                text,
                token.position,
                format!(
                    "unexpected {:?}; join matchers with `and` or `or`",
                    token.word
                ),
            ));
        }
        Ok(Self {
            text: text.trim().to_owned(),
            expression,
        })
    }

    /// The expression as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `host` is targeted.
    pub fn matches(&self, host: &HostView<'_>) -> bool {
        self.expression.matches(host)
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl Expression {
    fn matches(&self, host: &HostView<'_>) -> bool {
        match self {
            Expression::Or(parts) => parts.iter().any(|p| p.matches(host)),
            Expression::And(parts) => parts.iter().all(|p| p.matches(host)),
            Expression::Not(inner) => !inner.matches(host),
            Expression::Ids(globs) => globs.iter().any(|g| g.matches(host.id)),
            Expression::Label { key, value } => host
                .labels
                .get(key)
                .is_some_and(|v| value.matches_with(v, CASE_INSENSITIVE)),
            Expression::Fact { fact, value } => {
                let facts = host.facts;
                let candidates: Vec<String> = match fact {
                    Fact::Hostname => vec![facts.hostname.clone()],
                    Fact::Os => vec![facts.os_id.clone(), facts.os.clone()],
                    Fact::Kernel => vec![facts.kernel.clone()],
                    Fact::Docker => vec![facts.docker_version.clone()],
                    Fact::Cpus => vec![facts.cpus.to_string()],
                };
                candidates
                    .iter()
                    .any(|c| !c.is_empty() && value.matches_with(c, CASE_INSENSITIVE))
            }
            Expression::Role(role) => host.roles.contains(&role),
        }
    }
}

fn error(text: &str, position: usize, message: impl Into<String>) -> TargetError {
    TargetError {
        text: text.to_owned(),
        position,
        message: message.into(),
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Token<'a> {
    word: &'a str,
    position: usize,
}

/// Splits on spaces; parentheses are words of their own (a glob's `[...]` is left whole).
fn tokenize(text: &str) -> Result<Vec<Token<'_>>, TargetError> {
    let mut tokens = vec![];
    let mut start = None;
    let mut in_class = false;
    for (i, c) in text.char_indices() {
        match c {
            '[' => {
                in_class = true;
                start.get_or_insert(i);
            }
            ']' => {
                in_class = false;
                start.get_or_insert(i);
            }
            '(' | ')' if !in_class => {
                if let Some(s) = start.take() {
                    tokens.push(Token {
                        word: &text[s..i],
                        position: s,
                    });
                }
                tokens.push(Token {
                    word: &text[i..i + 1],
                    position: i,
                });
            }
            c if c.is_whitespace() && !in_class => {
                if let Some(s) = start.take() {
                    tokens.push(Token {
                        word: &text[s..i],
                        position: s,
                    });
                }
            }
            _ => {
                start.get_or_insert(i);
            }
        }
    }
    if in_class {
        return Err(error(text, text.len(), "a `[` is never closed"));
    }
    if let Some(s) = start {
        tokens.push(Token {
            word: &text[s..],
            position: s,
        });
    }
    Ok(tokens)
}

struct Parser<'a> {
    text: &'a str,
    tokens: Vec<Token<'a>>,
    next: usize,
    /// How many `not`s and `(`s enclose the factor being parsed.
    depth: usize,
}

impl<'a> Parser<'a> {
    fn peek(&self) -> Option<&Token<'a>> {
        self.tokens.get(self.next)
    }

    fn take_if(&mut self, word: &str) -> bool {
        if self.peek().is_some_and(|t| t.word == word) {
            self.next += 1;
            true
        } else {
            false
        }
    }

    fn expression(&mut self) -> Result<Expression, TargetError> {
        let mut parts = vec![self.term()?];
        while self.take_if("or") {
            parts.push(self.term()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expression::Or(parts)
        })
    }

    fn term(&mut self) -> Result<Expression, TargetError> {
        let mut parts = vec![self.factor()?];
        while self.take_if("and") {
            parts.push(self.factor()?);
        }
        Ok(if parts.len() == 1 {
            parts.remove(0)
        } else {
            Expression::And(parts)
        })
    }

    /// Parses what a `not` or `(` at `position` encloses, one level deeper.
    fn nested(
        &mut self,
        position: usize,
        parse: impl FnOnce(&mut Self) -> Result<Expression, TargetError>,
    ) -> Result<Expression, TargetError> {
        if self.depth == MAX_NESTING {
            return Err(error(
                self.text,
                position,
                format!("`not` and parentheses are nested more than {MAX_NESTING} deep"),
            ));
        }
        self.depth += 1;
        let inner = parse(self);
        self.depth -= 1;
        inner
    }

    fn factor(&mut self) -> Result<Expression, TargetError> {
        let Some(token) = self.peek().cloned() else {
            return Err(error(
                self.text,
                self.text.len(),
                "ends where a matcher was expected",
            ));
        };
        self.next += 1;
        match token.word {
            "not" => self.nested(token.position, |parser| {
                Ok(Expression::Not(Box::new(parser.factor()?)))
            }),
            "(" => self.nested(token.position, |parser| {
                let inner = parser.expression()?;
                if !parser.take_if(")") {
                    return Err(error(
                        parser.text,
                        token.position,
                        "this `(` is never closed",
                    ));
                }
                Ok(inner)
            }),
            ")" | "and" | "or" => Err(error(
                self.text,
                token.position,
                format!("expected a matcher, found {:?}", token.word),
            )),
            word => matcher(self.text, word, token.position),
        }
    }
}

fn pattern(text: &str, position: usize, glob: &str) -> Result<Pattern, TargetError> {
    if glob.is_empty() {
        return Err(error(text, position, "an empty glob matches nothing"));
    }
    Pattern::new(glob).map_err(|err| {
        error(
            text,
            position,
            format!("{glob:?} is not a valid glob: {err}"),
        )
    })
}

fn key_and_value<'w>(
    text: &str,
    position: usize,
    what: &str,
    rest: &'w str,
) -> Result<(&'w str, &'w str), TargetError> {
    rest.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .ok_or_else(|| error(text, position, format!("write {what}:NAME=VALUE")))
}

fn matcher(text: &str, word: &str, position: usize) -> Result<Expression, TargetError> {
    if let Some(rest) = word.strip_prefix("label:") {
        let (key, value) = key_and_value(text, position, "label", rest)?;
        return Ok(Expression::Label {
            key: key.to_owned(),
            value: pattern(text, position, value)?,
        });
    }
    if let Some(rest) = word.strip_prefix("fact:") {
        let (name, value) = key_and_value(text, position, "fact", rest)?;
        let fact = Fact::parse(name).ok_or_else(|| {
            error(
                text,
                position,
                format!("unknown fact {name:?}; facts are {FACTS}"),
            )
        })?;
        return Ok(Expression::Fact {
            fact,
            value: pattern(text, position, value)?,
        });
    }
    if let Some(role) = word.strip_prefix("role:") {
        let role = RoleName::new(role)
            .map_err(|err| error(text, position, format!("role {role:?} {err}")))?;
        return Ok(Expression::Role(role));
    }
    if let Some((prefix, _)) = word.split_once(':')
        && prefix != "id"
    {
        return Err(error(
            text,
            position,
            format!("unknown matcher {prefix:?}; use id:, label:, fact: or role:"),
        ));
    }
    let ids = word.strip_prefix("id:").unwrap_or(word);
    let globs = ids
        .split(',')
        .map(|glob| pattern(text, position, glob))
        .collect::<Result<_, _>>()?;
    Ok(Expression::Ids(globs))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Host {
        id: &'static str,
        facts: Facts,
        labels: BTreeMap<String, String>,
        roles: Vec<RoleName>,
    }

    fn host(id: &'static str, env: &str, os_id: &str, roles: &[&str]) -> Host {
        Host {
            id,
            facts: Facts {
                hostname: format!("{id}.example"),
                os: format!("{os_id} Linux"),
                os_id: os_id.to_owned(),
                kernel: "6.1.0".into(),
                docker_version: "20.10.24".into(),
                cpus: 4,
                memory_bytes: 0,
                labels: BTreeMap::new(),
            },
            labels: BTreeMap::from([("env".to_owned(), env.to_owned())]),
            roles: roles.iter().map(|r| RoleName::new(*r).unwrap()).collect(),
        }
    }

    fn fleet() -> Vec<Host> {
        vec![
            host("web-1", "prod", "debian", &["web"]),
            host("web-2", "staging", "debian", &["web"]),
            host("db-1", "prod", "ubuntu", &["db"]),
        ]
    }

    fn matching(expression: &str) -> Vec<&'static str> {
        let target = Target::parse(expression).unwrap();
        fleet()
            .iter()
            .filter(|h| {
                let roles: Vec<&RoleName> = h.roles.iter().collect();
                target.matches(&HostView {
                    id: h.id,
                    facts: &h.facts,
                    labels: &h.labels,
                    roles: &roles,
                })
            })
            .map(|h| h.id)
            .collect()
    }

    #[test]
    fn globs_lists_and_prefixed_matchers() {
        assert_eq!(matching("web-*"), ["web-1", "web-2"]);
        assert_eq!(matching("db-1,web-2"), ["web-2", "db-1"]);
        assert_eq!(matching("id:web-[2]"), ["web-2"]);
        assert_eq!(matching("label:env=prod"), ["web-1", "db-1"]);
        assert_eq!(matching("label:env=PROD"), ["web-1", "db-1"]);
        assert_eq!(matching("label:zone=a"), Vec::<&str>::new());
        assert_eq!(matching("fact:os=debian"), ["web-1", "web-2"]);
        assert_eq!(matching("fact:os=Ubuntu*"), ["db-1"]);
        assert_eq!(matching("fact:cpus=4"), ["web-1", "web-2", "db-1"]);
        assert_eq!(matching("role:db"), ["db-1"]);
    }

    #[test]
    fn not_binds_tighter_than_and_than_or() {
        assert_eq!(matching("label:env=prod and role:web"), ["web-1"]);
        assert_eq!(matching("role:db or web-2"), ["web-2", "db-1"]);
        assert_eq!(matching("not role:web"), ["db-1"]);
        assert_eq!(
            matching("role:db or label:env=staging and role:web"),
            ["web-2", "db-1"]
        );
        assert_eq!(
            matching("(role:db or label:env=staging) and not fact:os=ubuntu"),
            ["web-2"]
        );
        assert_eq!(matching("not not web-1"), ["web-1"]);
        assert_eq!(matching("(web-1)or(db-1)"), ["web-1", "db-1"]);
    }

    #[test]
    fn bad_expressions_say_what_and_where() {
        let err = |text: &str| Target::parse(text).unwrap_err();
        assert!(err("").message.contains("empty"));
        let e = err("role:web and");
        assert!(e.message.contains("ends where a matcher"), "{e}");
        let e = err("role:web label:env=prod");
        assert_eq!(e.position, 9, "{e}");
        assert!(e.message.contains("`and` or `or`"), "{e}");
        assert!(err("(role:web").message.contains("never closed"));
        assert!(err("role:web )").message.contains("unexpected"));
        assert!(err("grain:os=debian").message.contains("unknown matcher"));
        assert!(err("fact:ram=4").message.contains("facts are"));
        assert!(err("label:=x").message.contains("label:NAME=VALUE"));
        assert!(err("role:we/b").message.contains("role"));
        assert!(err("web-[1").message.contains("never closed"));
        assert!(err("and web-1").message.contains("expected a matcher"));
        assert_eq!(
            err("role:web label:x=y").to_string(),
            "target \"role:web label:x=y\": unexpected \"label:x=y\"; join matchers with `and` \
             or `or` (at character 10)"
        );
    }

    #[test]
    fn deep_nesting_is_refused_before_it_can_overflow_the_stack() {
        let parenthesized =
            |depth: usize| format!("{}web-1{}", "(".repeat(depth), ")".repeat(depth));
        assert_eq!(matching(&parenthesized(MAX_NESTING)), ["web-1"]);
        assert_eq!(
            matching(&format!("{}web-1", "not ".repeat(MAX_NESTING))),
            ["web-1"]
        );
        for deep in [
            parenthesized(MAX_NESTING + 1),
            parenthesized(100_000),
            format!("{}web-1", "not ".repeat(100_000)),
            format!("{}web-1", "not (".repeat(50_000)),
        ] {
            let err = Target::parse(&deep).unwrap_err();
            assert!(err.message.contains("nested more than 64 deep"), "{err}");
        }
        let err = Target::parse(&parenthesized(MAX_NESTING + 1)).unwrap_err();
        assert_eq!(err.position, MAX_NESTING, "the first `(` too many");
    }
}
