//! ai-rate-limiting's `cost_expr` (`limit_strategy: expression`): the tokens a response
//! costs, computed from its provider's raw usage fields, e.g.
//! `input_tokens + cache_read_input_tokens * 0.1 + output_tokens`.
//!
//! APISIX evaluates the text as Lua in a sandbox; this is a small evaluator of the same
//! arithmetic and nothing else (no code runs): numbers, variables (the usage object's
//! top-level numeric fields; a missing one is 0), `+ - * / %` and `^`, parentheses, unary
//! minus, and the functions `abs`, `ceil`, `floor`, `max`, `min`, `sqrt` (also written
//! `math.abs`, …). The result must be a finite number; a negative one costs 0, and it is
//! rounded half up (`floor(x + 0.5)`), as APISIX does
//! (`shared/reference/apisix-ai-routes.md` §3.5). Expressions are parsed once, when the
//! config is loaded, and bounded in length and depth.

use std::collections::BTreeMap;

/// Longest expression accepted, in bytes.
const MAX_LEN: usize = 1024;
/// Deepest nesting accepted.
const MAX_DEPTH: usize = 32;

/// A parsed cost expression.
#[derive(Debug, Clone, PartialEq)]
pub struct CostExpr(Node);

#[derive(Debug, Clone, PartialEq)]
enum Node {
    Num(f64),
    Var(String),
    Neg(Box<Node>),
    Bin(char, Box<Node>, Box<Node>),
    Call(Func, Vec<Node>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum Func {
    Abs,
    Ceil,
    Floor,
    Max,
    Min,
    Sqrt,
}

struct Parser<'a> {
    s: &'a [u8],
    at: usize,
    depth: usize,
}

impl Parser<'_> {
    fn ws(&mut self) {
        while self.s.get(self.at).is_some_and(u8::is_ascii_whitespace) {
            self.at += 1;
        }
    }

    fn peek(&mut self) -> Option<u8> {
        self.ws();
        self.s.get(self.at).copied()
    }

    fn err<T>(&self, what: &str) -> Result<T, String> {
        Err(format!("{what} at byte {}", self.at))
    }

    fn deeper(&mut self) -> Result<(), String> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("nested too deeply");
        }
        Ok(())
    }

    /// sum := product (('+' | '-') product)*
    fn sum(&mut self) -> Result<Node, String> {
        let mut left = self.product()?;
        while let Some(op @ (b'+' | b'-')) = self.peek() {
            self.at += 1;
            let right = self.product()?;
            left = Node::Bin(op as char, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// product := unary (('*' | '/' | '%') unary)*
    fn product(&mut self) -> Result<Node, String> {
        let mut left = self.unary()?;
        while let Some(op @ (b'*' | b'/' | b'%')) = self.peek() {
            self.at += 1;
            let right = self.unary()?;
            left = Node::Bin(op as char, Box::new(left), Box::new(right));
        }
        Ok(left)
    }

    /// unary := '-' unary | power
    fn unary(&mut self) -> Result<Node, String> {
        if self.peek() == Some(b'-') {
            self.at += 1;
            self.deeper()?;
            let n = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Neg(Box::new(n)));
        }
        self.power()
    }

    /// power := atom ('^' unary)?   (right-associative, binds tighter than unary minus
    /// on its left, as in Lua)
    fn power(&mut self) -> Result<Node, String> {
        let base = self.atom()?;
        if self.peek() == Some(b'^') {
            self.at += 1;
            self.deeper()?;
            let exp = self.unary()?;
            self.depth -= 1;
            return Ok(Node::Bin('^', Box::new(base), Box::new(exp)));
        }
        Ok(base)
    }

    fn atom(&mut self) -> Result<Node, String> {
        match self.peek() {
            Some(b'(') => {
                self.at += 1;
                self.deeper()?;
                let n = self.sum()?;
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return self.err("expected `)`");
                }
                self.at += 1;
                Ok(n)
            }
            Some(c) if c.is_ascii_digit() || c == b'.' => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_digit() || *c == b'.')
                {
                    self.at += 1;
                }
                let text = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
                text.parse::<f64>()
                    .map(Node::Num)
                    .or_else(|_| self.err("bad number"))
            }
            Some(c) if c.is_ascii_alphabetic() || c == b'_' => {
                let start = self.at;
                while self
                    .s
                    .get(self.at)
                    .is_some_and(|c| c.is_ascii_alphanumeric() || *c == b'_' || *c == b'.')
                {
                    self.at += 1;
                }
                let name = std::str::from_utf8(&self.s[start..self.at]).unwrap_or("");
                if self.peek() != Some(b'(') {
                    if name.contains('.') {
                        return self.err("unknown name");
                    }
                    return Ok(Node::Var(name.to_string()));
                }
                let func = match name.strip_prefix("math.").unwrap_or(name) {
                    "abs" => Func::Abs,
                    "ceil" => Func::Ceil,
                    "floor" => Func::Floor,
                    "max" => Func::Max,
                    "min" => Func::Min,
                    "sqrt" => Func::Sqrt,
                    _ => return self.err(&format!("unknown function `{name}`")),
                };
                self.at += 1;
                self.deeper()?;
                let mut args = vec![self.sum()?];
                while self.peek() == Some(b',') {
                    self.at += 1;
                    args.push(self.sum()?);
                }
                self.depth -= 1;
                if self.peek() != Some(b')') {
                    return self.err("expected `)`");
                }
                self.at += 1;
                let one = matches!(func, Func::Abs | Func::Ceil | Func::Floor | Func::Sqrt);
                if one && args.len() != 1 || args.is_empty() {
                    return self.err(&format!("wrong number of arguments to `{name}`"));
                }
                Ok(Node::Call(func, args))
            }
            _ => self.err("expected a number, a name or `(`"),
        }
    }
}

impl CostExpr {
    /// Parse an expression; the error says what and where.
    pub fn parse(text: &str) -> Result<CostExpr, String> {
        if text.len() > MAX_LEN {
            return Err(format!("longer than {MAX_LEN} bytes"));
        }
        let mut p = Parser {
            s: text.as_bytes(),
            at: 0,
            depth: 0,
        };
        let n = p.sum()?;
        if p.peek().is_some() {
            return p.err("unexpected text");
        }
        Ok(CostExpr(n))
    }

    /// The cost for a usage object's numeric fields: `None` when the result is not a
    /// finite number (nothing is charged then, as APISIX logs and skips it).
    pub fn cost(&self, usage: &BTreeMap<String, f64>) -> Option<u64> {
        let v = eval(&self.0, usage);
        v.is_finite().then(|| (v.max(0.0) + 0.5).floor() as u64)
    }
}

fn eval(n: &Node, vars: &BTreeMap<String, f64>) -> f64 {
    match n {
        Node::Num(x) => *x,
        Node::Var(v) => vars.get(v).copied().unwrap_or(0.0),
        Node::Neg(a) => -eval(a, vars),
        Node::Bin(op, a, b) => {
            let (a, b) = (eval(a, vars), eval(b, vars));
            match op {
                '+' => a + b,
                '-' => a - b,
                '*' => a * b,
                '/' => a / b,
                // Lua's modulo: the result takes the divisor's sign.
                '%' => a - (a / b).floor() * b,
                _ => a.powf(b),
            }
        }
        Node::Call(f, args) => {
            let v: Vec<f64> = args.iter().map(|a| eval(a, vars)).collect();
            match f {
                Func::Abs => v[0].abs(),
                Func::Ceil => v[0].ceil(),
                Func::Floor => v[0].floor(),
                Func::Sqrt => v[0].sqrt(),
                Func::Max => v.iter().copied().fold(f64::NEG_INFINITY, f64::max),
                Func::Min => v.iter().copied().fold(f64::INFINITY, f64::min),
            }
        }
    }
}

/// The top-level numeric fields of a usage object (what an expression may name).
pub fn usage_fields(usage: &serde_json::Value) -> BTreeMap<String, f64> {
    usage
        .as_object()
        .into_iter()
        .flatten()
        .filter_map(|(k, v)| Some((k.clone(), v.as_f64()?)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cost(expr: &str, usage: serde_json::Value) -> Option<u64> {
        CostExpr::parse(expr).unwrap().cost(&usage_fields(&usage))
    }

    #[test]
    fn apisix_test_cases() {
        // ai-rate-limiting-expression.t T8–T9: 50 + 200×0.1 + 100×1.25 + 30 = 225.
        let anthropic = json!({"input_tokens": 50, "cache_read_input_tokens": 200,
                               "cache_creation_input_tokens": 100, "output_tokens": 30});
        assert_eq!(
            cost(
                "input_tokens + cache_read_input_tokens * 0.1 + cache_creation_input_tokens * 1.25 + output_tokens",
                anthropic.clone()
            ),
            Some(225)
        );
        // T10–T11: a missing name is 0.
        assert_eq!(
            cost(
                "input_tokens + nonexistent_field + output_tokens",
                anthropic.clone()
            ),
            Some(80)
        );
        // T12–T13: negative → 0.
        assert_eq!(
            cost("input_tokens - cache_read_input_tokens", anthropic),
            Some(0)
        );
    }

    #[test]
    fn arithmetic_functions_and_rounding() {
        let u = json!({"a": 7, "b": 2, "nested": {"c": 5}});
        assert_eq!(cost("a / b", u.clone()), Some(4), "3.5 rounds half up");
        assert_eq!(cost("(a - b) * 3 % 4", u.clone()), Some(3));
        assert_eq!(
            cost("-b ^ 2 + 10", u.clone()),
            Some(6),
            "^ binds tighter than unary minus"
        );
        assert_eq!(
            cost(
                "math.max(a, b, 9) + min(a, b) + abs(-1) + floor(1.9) + ceil(0.1)",
                u.clone()
            ),
            Some(14)
        );
        assert_eq!(
            cost("nested + c", u.clone()),
            Some(0),
            "nested objects are not variables"
        );
        assert_eq!(cost("a / 0", u), None, "infinite: nothing charged");
    }

    #[test]
    fn only_arithmetic_parses() {
        for bad in [
            "",
            "a +",
            "os.exit()",
            "a b",
            "max()",
            "floor(1, 2)",
            "(a",
            "a)",
            "1..2",
            "string.rep('x', 9)",
            "a; b",
            "a == b",
        ] {
            assert!(CostExpr::parse(bad).is_err(), "{bad:?}");
        }
        assert!(
            CostExpr::parse(&"(".repeat(40)).is_err(),
            "depth is bounded"
        );
        assert!(
            CostExpr::parse(&"1+".repeat(600)).is_err(),
            "length is bounded"
        );
    }
}
