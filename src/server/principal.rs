//! The name of a mutual-TLS client, as Kafka derives it: `ssl.principal.mapping.rules` applied to
//! the subject distinguished name of the client's certificate (RFC 2253, as Java's
//! `X500Principal.getName()` prints it: see `io::tls::subject_dn`). Pure: the connection turns
//! the name into the principal `User:<name>`.
//!
//! The rules are Kafka's (`SslPrincipalMapper`): a list of `RULE:pattern/replacement/` (with an
//! optional `L` or `U` after the last `/` to lower- or upper-case the result) and `DEFAULT` (the
//! DN as it is), separated by commas; Spate also takes a newline as a separator, so a TOML
//! multi-line string can hold one rule a line (Kafka's splitter silently drops a rule that only
//! a newline follows: `RULE:.../U` newline `DEFAULT` is `[DEFAULT]` there). A
//! `/` inside a pattern or replacement is written `\/`. The first rule whose pattern matches the
//! whole DN gives the name: Java's `dn.replaceAll(pattern, replacement)`, so `$1`, `$12` and
//! `${name}` refer to groups, `\x` is a literal `x`, and, as in Kafka, a `$n` beyond the
//! pattern's groups is literal text (`$4` with three groups), `$12` with one group is group 1
//! then `2`. What Kafka takes but then fails on at every authentication the rule applies to (a
//! `$` with no group after it, `$1` when the pattern has no groups, a `${name}` it lacks) is
//! refused when the rules are read. No rule matching is an error: Kafka then fails the
//! authentication ("No rules apply to ..."). An empty rule list is valid and matches nothing, as in Kafka; the configuration's
//! default is `DEFAULT`.
//!
//! Patterns are Java regular expressions; Spate runs them with the `regex` crate (RE2 syntax).
//! What Java has and RE2 lacks is refused when the rules are read, naming the construct:
//! backreferences (`\1`, `\k<name>`), look-ahead and look-behind, atomic groups `(?>...)`,
//! possessive quantifiers (`*+`, `++`, `?+`, `{n,m}+`; RE2 would read them as a second
//! repetition) and the `(?U)` flag (Java's Unicode character classes; RE2's ungreedy mode).
//! What both have but mean differently is translated to Java's meaning: `\w`, `\d`, `\s`, `\b`
//! and their negations are ASCII-only as in Java (RE2's are Unicode), `\h` and `\v` are Java's
//! horizontal and vertical whitespace, `\p{Lower}`, `\p{Alpha}` and Java's other POSIX classes
//! are ASCII, `\<` and `\>` are the characters (RE2: word boundaries); `\Q...\E`, `\e`, `\cX`
//! and octal `\0nnn` are rewritten into RE2's syntax; the `d` and `u` flags are dropped (RE2 knows
//! only `\n` as a line end and folds case by Unicode anyway). Left as they are, on purpose: `.`
//! also matches `\r`, `\u{85}`, `\u{2028}` and `\u{2029}` (Java's does not), `$` matches only at
//! the very end (Java's also before a final line end), and `(?i)` folds non-ASCII letters too
//! (Java's folds ASCII only unless `(?u)`) — none of which a certificate's DN brings in practice.

use std::fmt;

use regex::{Captures, Regex};

/// `ssl.principal.mapping.rules`, parsed: see the module doc.
#[derive(Debug, Clone)]
pub struct MappingRules {
    rules: Vec<Rule>,
}

#[derive(Debug, Clone)]
enum Rule {
    Default,
    Map(MapRule),
}

#[derive(Debug, Clone)]
struct MapRule {
    /// As written (escapes kept), for messages.
    pattern: String,
    replacement: String,
    /// The translated pattern, anchored at both ends: does the rule apply.
    whole: Regex,
    /// The translated pattern, unanchored: Java's `replaceAll` runs over every match.
    find: Regex,
    pieces: Vec<Piece>,
    case: Case,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Case {
    Keep,
    Lower,
    Upper,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(String),
    Group(usize),
    Named(String),
}

impl Default for MappingRules {
    /// Kafka's default, `DEFAULT`: the DN itself.
    fn default() -> MappingRules {
        MappingRules { rules: vec![Rule::Default] }
    }
}

impl MappingRules {
    /// Reads rules in Kafka's syntax. The error names the rule and what is wrong with it.
    pub fn parse(s: &str) -> Result<MappingRules, String> {
        // Java's `trim()`: every character up to the space.
        let s = s.trim_matches(|c: char| c <= ' ');
        let b = s.as_bytes();
        let mut rules = Vec::new();
        let mut p = 0;
        loop {
            while p < b.len() && is_space(b[p]) {
                p += 1;
            }
            if p >= b.len() {
                break;
            }
            let rest = &s[p..];
            let default_end = p + "DEFAULT".len();
            if rest.starts_with("DEFAULT") && separator(b, default_end).is_some() {
                rules.push(Rule::Default);
                p = separator(b, default_end).unwrap_or(b.len());
                continue;
            }
            if let Some((pat_end, rep_end)) = rest.strip_prefix("RULE:").and_then(|_| rule_parts(b, p + 5)) {
                let mut k = rep_end + 1;
                let case = match b.get(k) {
                    Some(b'L') => Case::Lower,
                    Some(b'U') => Case::Upper,
                    _ => Case::Keep,
                };
                if case != Case::Keep {
                    k += 1;
                }
                let (end, next) = rule_end(b, k);
                if end > k {
                    return Err(format!(
                        "invalid rule `{}`: `{}` after the replacement's closing `/` (only L or U may follow it)",
                        &s[p..end],
                        &s[k..end]
                    ));
                }
                let pattern = &s[p + 5..pat_end];
                let replacement = &s[pat_end + 1..rep_end];
                rules.push(Rule::Map(MapRule::new(pattern, replacement, case).map_err(|e| format!("rule `{}`: {e}", &s[p..end]))?));
                p = next;
                continue;
            }
            // Kafka's third alternative: whatever runs to the next separator, an empty rule
            // (ignored) or not a rule.
            let (end, next) = rule_end(b, p);
            if end > p {
                return Err(format!(
                    "invalid rule `{}`: expected DEFAULT or RULE:pattern/replacement/ (with L or U after the last / to change the case)",
                    &s[p..end]
                ));
            }
            p = next;
        }
        Ok(MappingRules { rules })
    }

    /// The name the rules give a DN; an error (Kafka's message) when no rule applies.
    pub fn name(&self, dn: &str) -> Result<String, String> {
        for rule in &self.rules {
            match rule {
                Rule::Default => return Ok(dn.to_string()),
                Rule::Map(m) => {
                    if let Some(name) = m.apply(dn) {
                        return Ok(name);
                    }
                }
            }
        }
        Err(format!("No rules apply to {dn}, rules {self}"))
    }
}

/// Kafka's `toString()` of the rule list: `[RULE:pattern/replacement/L, DEFAULT]`.
impl fmt::Display for MappingRules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[")?;
        for (i, rule) in self.rules.iter().enumerate() {
            if i > 0 {
                f.write_str(", ")?;
            }
            match rule {
                Rule::Default => f.write_str("DEFAULT")?,
                Rule::Map(m) => {
                    write!(f, "RULE:{}/{}", m.pattern, m.replacement)?;
                    match m.case {
                        Case::Lower => f.write_str("/L")?,
                        Case::Upper => f.write_str("/U")?,
                        Case::Keep => {}
                    }
                }
            }
        }
        f.write_str("]")
    }
}

/// Java's `\s`.
fn is_space(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | 0x0B | 0x0C | b'\r')
}

/// A separator at `at` (after spaces other than newlines): a comma, a newline or the end.
/// Returns where the next rule may start.
fn separator(b: &[u8], at: usize) -> Option<usize> {
    let mut r = at;
    while r < b.len() && is_space(b[r]) && b[r] != b'\n' {
        r += 1;
    }
    match b.get(r) {
        None => Some(r),
        Some(b',' | b'\n') => Some(r + 1),
        Some(_) => None,
    }
}

/// The first separator from `from`: where the rule's text ends, and where the next may start.
fn rule_end(b: &[u8], from: usize) -> (usize, usize) {
    (from..=b.len()).find_map(|q| separator(b, q).map(|next| (q, next))).unwrap_or((b.len(), b.len()))
}

/// After `RULE:`: the indices of the `/` closing the pattern and of the one closing the
/// replacement, `\` escaping the character after it. None when either is missing before the
/// end or a newline.
fn rule_parts(b: &[u8], start: usize) -> Option<(usize, usize)> {
    fn closing(b: &[u8], mut i: usize) -> Option<usize> {
        loop {
            match *b.get(i)? {
                b'\\' if matches!(b.get(i + 1), None | Some(b'\n')) => return None,
                b'\\' => i += 2,
                b'/' => return Some(i),
                b'\n' => return None,
                _ => i += 1,
            }
        }
    }
    let pat_end = closing(b, start)?;
    let rep_end = closing(b, pat_end + 1)?;
    Some((pat_end, rep_end))
}

impl MapRule {
    fn new(pattern: &str, replacement: &str, case: Case) -> Result<MapRule, String> {
        let (translated, comments_at_end) = translate(pattern).map_err(|e| format!("pattern `{pattern}`: {e}"))?;
        let find = Regex::new(&translated).map_err(|e| {
            // Point at the pattern as written when it fails as it is, else at the translation.
            let detail = match Regex::new(pattern) {
                Err(original) => original.to_string(),
                Ok(_) => format!("{e} (after translating Java's syntax into RE2's: `{translated}`)"),
            };
            format!("pattern `{pattern}` is not a regular expression Spate can run (RE2 syntax): {detail}")
        })?;
        // In comments mode (`(?x)`) a `#` comment may run to the pattern's end: a newline ends
        // it before the wrapper's `)`.
        let end = if comments_at_end { "\n" } else { "" };
        let whole = Regex::new(&format!("^(?:{translated}{end})\\z"))
            .map_err(|e| format!("pattern `{pattern}` is not a regular expression Spate can run (RE2 syntax): {e}"))?;
        let pieces = parse_replacement(replacement, &find).map_err(|e| format!("replacement `{replacement}`: {e}"))?;
        Ok(MapRule { pattern: pattern.to_string(), replacement: replacement.to_string(), whole, find, pieces, case })
    }

    fn apply(&self, dn: &str) -> Option<String> {
        if !self.whole.is_match(dn) {
            return None;
        }
        let name = replace_all(&self.find, dn, |caps, out| self.expand(caps, out));
        Some(match self.case {
            Case::Keep => name,
            Case::Lower => name.to_lowercase(),
            Case::Upper => name.to_uppercase(),
        })
    }

    fn expand(&self, caps: &Captures<'_>, out: &mut String) {
        for piece in &self.pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Group(i) => out.push_str(caps.get(*i).map_or("", |m| m.as_str())),
                Piece::Named(n) => out.push_str(caps.name(n).map_or("", |m| m.as_str())),
            }
        }
    }
}

/// Java's `String.replaceAll`: every match from the left, the search resuming at the end of
/// the last one, one character further after an empty match (so `a*` over `baaab` gives
/// `-b--b-`, where the regex crate's `replace_all` gives `-b-b-`).
fn replace_all(re: &Regex, s: &str, mut expand: impl FnMut(&Captures<'_>, &mut String)) -> String {
    let mut out = String::with_capacity(s.len());
    let (mut copied, mut from) = (0, 0);
    while from <= s.len() {
        let Some(caps) = re.captures_at(s, from) else { break };
        let m = caps.get(0).expect("group 0 is the match");
        out.push_str(&s[copied..m.start()]);
        expand(&caps, &mut out);
        copied = m.end();
        from = if m.is_empty() {
            match s[m.end()..].chars().next() {
                Some(c) => m.end() + c.len_utf8(),
                None => break,
            }
        } else {
            m.end()
        };
    }
    out.push_str(&s[copied..]);
    out
}

/// A replacement as Java's `Matcher.appendReplacement` reads it, with Kafka's leniency for
/// group numbers beyond the pattern's. What Java would fail on when the rule applies (a `$`
/// with no group after it, a group the pattern does not have) is refused here, up front.
fn parse_replacement(r: &str, re: &Regex) -> Result<Vec<Piece>, String> {
    let groups = re.captures_len() - 1;
    let c: Vec<char> = r.chars().collect();
    let mut pieces = Vec::new();
    let mut text = String::new();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' => {
                let next = c.get(i + 1).ok_or("a `\\` at the end escapes nothing (write `\\\\` for a backslash)")?;
                text.push(*next);
                i += 2;
            }
            '$' => {
                let digits: String = c[i + 1..].iter().take_while(|d| d.is_ascii_digit()).collect();
                if let Some(first) = digits.chars().next() {
                    // Kafka's `escapeLiteralBackReferences`: a number that names no group, even
                    // shortened digit by digit from the right, is literal text.
                    if groups > 0 && first != '0' {
                        let mut n = digits.chars().fold(0u64, |n, d| n.saturating_mul(10).saturating_add(d as u64 - '0' as u64));
                        while n > groups as u64 && n >= 10 {
                            n /= 10;
                        }
                        if n > groups as u64 {
                            text.push('$');
                            i += 1;
                            continue;
                        }
                    }
                    // Java: the first digit, then more while the number still names a group.
                    let mut group = first as usize - '0' as usize;
                    if group > groups {
                        return Err(format!("`${group}` refers to group {group}, but the pattern has no groups"));
                    }
                    let mut used = 1;
                    for d in digits.chars().skip(1) {
                        let longer = group * 10 + (d as usize - '0' as usize);
                        if longer > groups {
                            break;
                        }
                        group = longer;
                        used += 1;
                    }
                    flush(&mut text, &mut pieces);
                    pieces.push(Piece::Group(group));
                    i += 1 + used;
                } else if c.get(i + 1) == Some(&'{') {
                    let close = c[i + 2..].iter().position(|&x| x == '}').ok_or("`${` without its closing `}`")?;
                    let name: String = c[i + 2..i + 2 + close].iter().collect();
                    let java_name =
                        name.chars().next().is_some_and(|f| f.is_ascii_alphabetic()) && name.chars().all(|x| x.is_ascii_alphanumeric());
                    if !java_name {
                        return Err(format!("`${{{name}}}`: a group name is a letter then letters and digits"));
                    }
                    if !re.capture_names().flatten().any(|n| n == name) {
                        return Err(format!("`${{{name}}}`: the pattern has no group named `{name}`"));
                    }
                    flush(&mut text, &mut pieces);
                    pieces.push(Piece::Named(name));
                    i += 3 + close;
                } else {
                    return Err("a `$` must be followed by a group number or {name} (write `\\$` for a dollar sign)".into());
                }
            }
            ch => {
                text.push(ch);
                i += 1;
            }
        }
    }
    flush(&mut text, &mut pieces);
    Ok(pieces)
}

fn flush(text: &mut String, pieces: &mut Vec<Piece>) {
    if !text.is_empty() {
        pieces.push(Piece::Text(std::mem::take(text)));
    }
}

const WORD: &str = "0-9A-Za-z_";
const SPACE: &str = r"\t\n\x0B\f\r ";
const HSPACE: &str = r" \t\xA0\x{1680}\x{180E}\x{2000}-\x{200A}\x{202F}\x{205F}\x{3000}";
const VSPACE: &str = r"\n\x0B\f\r\x{85}\x{2028}\x{2029}";

/// Java's POSIX classes (`\p{Lower}`...), ASCII-only as RE2's `[:lower:]`.
const POSIX: [(&str, &str); 13] = [
    ("Lower", "lower"),
    ("Upper", "upper"),
    ("ASCII", "ascii"),
    ("Alpha", "alpha"),
    ("Digit", "digit"),
    ("Alnum", "alnum"),
    ("Punct", "punct"),
    ("Graph", "graph"),
    ("Print", "print"),
    ("Blank", "blank"),
    ("Cntrl", "cntrl"),
    ("XDigit", "xdigit"),
    ("Space", "space"),
];

/// A Java pattern in the regex crate's syntax, with Java's meaning (see the module doc), or what
/// Java has that RE2 lacks. Also says whether comments mode (`(?x)`) is on at the pattern's end.
fn translate(src: &str) -> Result<(String, bool), String> {
    let c: Vec<char> = src.chars().collect();
    let mut out = String::with_capacity(src.len() + 16);
    let mut i = 0;
    // Depth of `[...]` nesting; comments mode of each open group, innermost last; whether the
    // last token was a quantifier (a `+` after it would make it possessive).
    let mut class = 0usize;
    let mut comments = vec![false];
    let mut quantified = false;
    while i < c.len() {
        let ch = c[i];
        let x = *comments.last().expect("the outermost level");
        if class == 0 && x && (ch == '#' || ch.is_whitespace()) {
            // Comments mode: a comment or a space changes nothing, not even what came before.
            if ch == '#' {
                while i < c.len() && c[i] != '\n' {
                    out.push(c[i]);
                    i += 1;
                }
            } else {
                out.push(ch);
                i += 1;
            }
            continue;
        }
        match ch {
            '\\' => {
                quantified = false;
                let Some(&n) = c.get(i + 1) else {
                    out.push('\\');
                    i += 1;
                    continue;
                };
                i += 2;
                match n {
                    'w' => out.push_str(&format!("[{WORD}]")),
                    'W' => out.push_str(&format!("[^{WORD}]")),
                    'd' => out.push_str("[0-9]"),
                    'D' => out.push_str("[^0-9]"),
                    's' => out.push_str(&format!("[{SPACE}]")),
                    'S' => out.push_str(&format!("[^{SPACE}]")),
                    'h' => out.push_str(&format!("[{HSPACE}]")),
                    'H' => out.push_str(&format!("[^{HSPACE}]")),
                    'v' => out.push_str(&format!("[{VSPACE}]")),
                    'V' => out.push_str(&format!("[^{VSPACE}]")),
                    'b' | 'B' if class == 0 => out.push_str(&format!("(?-u:\\{n})")),
                    '<' | '>' => out.push(n),
                    'e' => out.push_str(r"\x1B"),
                    'c' => {
                        let x = c.get(i).ok_or("`\\c` without its control letter")?;
                        out.push_str(&format!("\\x{{{:X}}}", *x as u32 ^ 64));
                        i += 1;
                    }
                    '0' => {
                        let octal = |k: usize| c.get(k).and_then(|d| d.to_digit(8));
                        let d1 = octal(i).ok_or("`\\0` must be followed by an octal digit")?;
                        let (mut value, mut used) = (d1, 1);
                        if let Some(d2) = octal(i + 1) {
                            (value, used) = (d1 * 8 + d2, 2);
                            if let (Some(d3), true) = (octal(i + 2), d1 <= 3) {
                                (value, used) = (value * 8 + d3, 3);
                            }
                        }
                        out.push_str(&format!("\\x{{{value:X}}}"));
                        i += used;
                    }
                    'x' | 'u' => {
                        // Copied whole, so that `\x{41}` is not taken for a `{n}` repetition.
                        out.push('\\');
                        out.push(n);
                        if n == 'x' && c.get(i) == Some(&'{') {
                            while i < c.len() {
                                out.push(c[i]);
                                i += 1;
                                if c[i - 1] == '}' {
                                    break;
                                }
                            }
                        } else {
                            let len = if n == 'x' { 2 } else { 4 };
                            for _ in 0..len.min(c.len() - i) {
                                out.push(c[i]);
                                i += 1;
                            }
                        }
                    }
                    'Q' => {
                        let end = (i..c.len()).find(|&k| c[k] == '\\' && c.get(k + 1) == Some(&'E')).unwrap_or(c.len());
                        let quoted: String = c[i..end].iter().collect();
                        out.push_str(&regex::escape(&quoted));
                        i = (end + 2).min(c.len());
                    }
                    'E' => {} // a `\E` with no `\Q` before it: nothing, as in Java
                    'p' | 'P' if c.get(i) == Some(&'{') => {
                        let close = c[i..].iter().position(|&x| x == '}').ok_or("`\\p{` without its closing `}`")?;
                        let name: String = c[i + 1..i + close].iter().collect();
                        i += close + 1;
                        if let Some((_, posix)) = POSIX.iter().find(|(java, _)| *java == name) {
                            let neg = if n == 'P' { "^" } else { "" };
                            out.push_str(&format!("[[:{neg}{posix}:]]"));
                        } else if name.starts_with("java") {
                            return Err(format!("`\\{n}{{{name}}}`: Java's java.lang.Character classes are not supported"));
                        } else {
                            let name = name.strip_prefix("Is").unwrap_or(&name);
                            out.push_str(&format!("\\{n}{{{name}}}"));
                        }
                    }
                    'k' => return Err("backreferences (`\\k<name>`) are not supported".into()),
                    'G' | 'Z' | 'R' | 'X' | 'N' => return Err(format!("`\\{n}` is not supported")),
                    n if !n.is_ascii() && !n.is_alphanumeric() => out.push_str(&regex::escape(&n.to_string())),
                    n => {
                        out.push('\\');
                        out.push(n);
                    }
                }
            }
            '[' => {
                quantified = false;
                class += 1;
                out.push('[');
                i += 1;
                if c.get(i) == Some(&'^') {
                    out.push('^');
                    i += 1;
                }
                if c.get(i) == Some(&']') {
                    out.push(']');
                    i += 1;
                }
            }
            ']' if class > 0 => {
                class -= 1;
                out.push(']');
                i += 1;
            }
            _ if class > 0 => {
                out.push(ch);
                i += 1;
            }
            '(' => {
                quantified = false;
                if c.get(i + 1) != Some(&'?') {
                    comments.push(x);
                    out.push('(');
                    i += 1;
                    continue;
                }
                match c.get(i + 2) {
                    Some('=' | '!') => return Err("look-ahead (`(?=...)`, `(?!...)`) is not supported".into()),
                    Some('<') if matches!(c.get(i + 3), Some('=' | '!')) => {
                        return Err("look-behind (`(?<=...)`, `(?<!...)`) is not supported".into())
                    }
                    Some('>') => return Err("atomic groups (`(?>...)`) are not supported".into()),
                    Some(':' | '<' | 'P') => {
                        comments.push(x);
                        out.push_str("(?");
                        i += 2;
                    }
                    _ => {
                        // Flags: `(?imsx-imsx)` for the rest of the group, `(?imsx-imsx:...)`
                        // for a group of their own.
                        let mut kept = String::new();
                        let (mut on, mut new_x) = (true, x);
                        let mut k = i + 2;
                        loop {
                            match c.get(k) {
                                None => return Err("`(?` without its closing `)`".into()),
                                Some(')' | ':') => break,
                                Some('-') => {
                                    on = false;
                                    kept.push('-');
                                }
                                Some(f @ ('i' | 'm' | 's' | 'x')) => {
                                    if *f == 'x' {
                                        new_x = on;
                                    }
                                    kept.push(*f);
                                }
                                Some('d' | 'u') => {}
                                Some('U') => {
                                    return Err(
                                        "the flag `U` (Java's Unicode character classes; RE2's ungreedy mode) is not supported".into()
                                    )
                                }
                                Some(f) => return Err(format!("unknown flag `{f}` (Java's are i, d, m, s, u, x and U)")),
                            }
                            k += 1;
                        }
                        let kept = kept.trim_end_matches('-');
                        if c[k] == ')' {
                            *comments.last_mut().expect("the outermost level") = new_x;
                            if !kept.is_empty() {
                                out.push_str(&format!("(?{kept})"));
                            }
                        } else {
                            comments.push(new_x);
                            out.push_str(&format!("(?{kept}:"));
                        }
                        i = k + 1;
                    }
                }
            }
            ')' => {
                quantified = false;
                if comments.len() > 1 {
                    comments.pop();
                }
                out.push(')');
                i += 1;
            }
            '*' | '+' | '?' => {
                if quantified && ch == '+' {
                    return Err("possessive quantifiers (`*+`, `++`, `?+`, `{n,m}+`) are not supported".into());
                }
                // A `?` after a quantifier makes it lazy; anything else is a quantifier.
                quantified = !(quantified && ch == '?');
                out.push(ch);
                i += 1;
            }
            '{' => {
                // `{n}`, `{n,}`, `{n,m}`: a quantifier; anything else is left to RE2.
                let close = c[i..].iter().position(|&x| x == '}');
                let counted = close.is_some_and(|close| {
                    let inner: String = c[i + 1..i + close].iter().collect();
                    let (lo, hi) = inner.split_once(',').unwrap_or((&inner, "0"));
                    !lo.is_empty() && lo.chars().all(|d| d.is_ascii_digit()) && hi.chars().all(|d| d.is_ascii_digit())
                });
                match close {
                    Some(close) if counted => {
                        out.extend(&c[i..=i + close]);
                        i += close + 1;
                        quantified = true;
                    }
                    _ => {
                        out.push('{');
                        i += 1;
                        quantified = false;
                    }
                }
            }
            _ => {
                quantified = false;
                out.push(ch);
                i += 1;
            }
        }
    }
    Ok((out, *comments.last().expect("the outermost level")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(rules: &str, dn: &str) -> Result<String, String> {
        MappingRules::parse(rules).unwrap_or_else(|e| panic!("{rules}: {e}")).name(dn)
    }

    fn shown(rules: &str) -> String {
        MappingRules::parse(rules).unwrap_or_else(|e| panic!("{rules}: {e}")).to_string()
    }

    // Kafka's SslPrincipalMapperTest, its cases.

    #[test]
    fn valid_rules() {
        for rules in [
            "DEFAULT",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L, DEFAULT",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/L",
            "RULE:^cn=(.?),ou=(.?),dc=(.?),dc=(.?)$/$1@$2/U",
            "RULE:^CN=([^,ADEFLTU,]+)(,.*|$)/$1/",
            "RULE:^CN=([^,DEFAULT,]+)(,.*|$)/$1/",
        ] {
            assert!(MappingRules::parse(rules).is_ok(), "{rules}");
        }
    }

    #[test]
    fn invalid_rules() {
        for rules in [
            "default",
            "DEFAUL",
            "DEFAULT/L",
            "DEFAULT/U",
            "RULE:CN=(.*?),OU=ServiceUsers.*/$1",
            "rule:^CN=(.*?),OU=ServiceUsers.*$/$1/",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/L",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/U",
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/LU",
            // The `\` escapes the `/`: the replacement has no end.
            "RULE:^CN=(.*)$/a\\/",
        ] {
            assert!(MappingRules::parse(rules).is_err(), "{rules}");
        }
        let e = MappingRules::parse("RULE:^CN=(.*)$/$1/L/U").unwrap_err();
        assert!(e.contains("`/U` after the replacement's closing `/`"), "{e}");
        let e = MappingRules::parse("DEFAULT, default").unwrap_err();
        assert!(e.starts_with("invalid rule `default`"), "{e}");
    }

    #[test]
    fn mapper() {
        let rules = [
            "RULE:^CN=(.*?),OU=ServiceUsers.*$/$1/L",
            "RULE:^CN=(.*?),OU=(.*?),O=(.*?),L=(.*?),ST=(.*?),C=(.*?)$/$1@$2/L",
            "RULE:^cn=(.*?),ou=(.*?),dc=(.*?),dc=(.*?)$/$1@$2/U",
            "RULE:^.*[Cc][Nn]=([a-zA-Z0-9.]*).*$/$1/U",
            "DEFAULT",
        ]
        .join(", ");
        let m = MappingRules::parse(&rules).unwrap();
        assert_eq!(m.name("CN=Duke,OU=ServiceUsers,O=Org,C=US").unwrap(), "duke");
        assert_eq!(m.name("CN=Duke,OU=SME,O=mycp,L=Fulton,ST=MD,C=US").unwrap(), "duke@sme");
        assert_eq!(m.name("cn=duke,ou=sme,dc=mycp,dc=com").unwrap(), "DUKE@SME");
        assert_eq!(m.name("cN=duke,OU=JavaSoft,O=Sun Microsystems").unwrap(), "DUKE");
        assert_eq!(m.name("OU=JavaSoft,O=Sun Microsystems,C=US").unwrap(), "OU=JavaSoft,O=Sun Microsystems,C=US");
    }

    #[test]
    fn rules_splitting() {
        for (expected, rules) in [
            ("[]", ""),
            ("[DEFAULT]", "DEFAULT"),
            ("[RULE:/]", "RULE://"),
            ("[RULE:/.*]", "RULE:/.*/"),
            ("[RULE:/.*/L]", "RULE:/.*/L"),
            ("[RULE:/, DEFAULT]", "RULE://,DEFAULT"),
            ("[RULE:/, DEFAULT]", "  RULE:// ,  DEFAULT  "),
            ("[RULE:   /     , DEFAULT]", "  RULE:   /     / ,  DEFAULT  "),
            ("[RULE:  /     /U, DEFAULT]", "  RULE:  /     /U   ,DEFAULT  "),
            ("[RULE:([A-Z]*)/$1/U, RULE:([a-z]+)/$1, DEFAULT]", "  RULE:([A-Z]*)/$1/U   ,RULE:([a-z]+)/$1/,   DEFAULT  "),
            // Empty rules are ignored.
            ("[]", ",   , , ,      , , ,   "),
            ("[RULE:/, DEFAULT]", ",,RULE://,,,DEFAULT,,"),
            ("[RULE: /   , DEFAULT]", ",  , RULE: /   /    ,,,   DEFAULT, ,   "),
            ("[RULE:   /  /U, DEFAULT]", "     ,  , RULE:   /  /U    ,,  ,DEFAULT, ,"),
            // Escapes stay as written.
            (r"[RULE:\/\\\(\)\n\t/\/\/]", r"RULE:\/\\\(\)\n\t/\/\//"),
            (r"[RULE:\**\/+/*/L, RULE:\/*\**/**]", r"RULE:\**\/+/*/L,RULE:\/*\**/**/"),
            // Commas inside a rule belong to it.
            (
                r"[RULE:,RULE:,/,RULE:,\//U, RULE:,/RULE:,, RULE:,RULE:,/L,RULE:,/L, RULE:, DEFAULT, /DEFAULT, DEFAULT]",
                r"RULE:,RULE:,/,RULE:,\//U,RULE:,/RULE:,/,RULE:,RULE:,/L,RULE:,/L,RULE:, DEFAULT, /DEFAULT/,DEFAULT",
            ),
        ] {
            assert_eq!(shown(rules), expected, "{rules}");
        }
    }

    #[test]
    fn comma_with_whitespace() {
        assert_eq!(name(r"RULE:^CN=((\\, *|\w)+)(,.*|$)/$1/,DEFAULT", r"CN=Tkac\, Adam,OU=ITZ,DC=geodis,DC=cz").unwrap(), r"Tkac\, Adam");
    }

    // Beyond Kafka's test: each expected value is what Kafka 4's SslPrincipalMapper on Java 17
    // answered for the same rules and DN.

    #[test]
    fn replacement_like_kafka() {
        // A group the pattern lacks is literal text; a number too large loses digits.
        assert_eq!(name("RULE:^CN=(.*?),OU=(.*?),O=(.*?)$/$1@$4/", "CN=a,OU=b,O=c").unwrap(), "a@$4");
        assert_eq!(name("RULE:^CN=(.*?),OU=(.*?)$/$12/", "CN=a,OU=b").unwrap(), "a2");
        assert_eq!(name("RULE:^CN=(.*)$/$0/", "CN=x").unwrap(), "CN=x");
        assert_eq!(name("RULE:^CN=(.*)$/$01/", "CN=x").unwrap(), "x");
        assert_eq!(name("RULE:^CN=(?<user>[^,]*),.*$/${user}/L", "CN=Alice,O=x").unwrap(), "alice");
        assert_eq!(name(r"RULE:^CN=(.*)$/\$1 is $1/", "CN=bob").unwrap(), "$1 is bob");
        assert_eq!(name(r"RULE:^CN=a\/b$/ok\/yes/", "CN=a/b").unwrap(), "ok/yes");
        // A group that took no part is empty.
        assert_eq!(name("RULE:^CN=([^,]+)(,OU=([^,]+))?$/$1:$3/", "CN=a").unwrap(), "a:");
        // Java's replaceAll: every match, not only the whole one.
        assert_eq!(name("RULE:CN=a|CN=ab/X/", "CN=ab").unwrap(), "Xb");
        assert_eq!(name("RULE:(.*?)/[$1]/", "abc").unwrap(), "[]a[]b[]c[]");
        assert_eq!(name("RULE:^CN=(.*)$/$1/", r"CN=x\+y").unwrap(), r"x\+y");
        // Case, by Unicode's full mappings as Java's.
        assert_eq!(name("RULE:^CN=([^,]+).*$/$1/U", "CN=straße,O=x").unwrap(), "STRASSE");
        assert_eq!(name("RULE:^CN=(.*)$/$1/L", "CN=ÀÉ").unwrap(), "àé");
        assert_eq!(name(",,  RULE:^CN=(.*)$/$1/U  ,  DEFAULT", "CN=x").unwrap(), "X");
    }

    #[test]
    fn replacement_errors_up_front() {
        // Kafka accepts these rules and fails each authentication they apply to.
        for (rules, says) in [
            ("RULE:^CN=(.*)$/$/", "a `$` must be followed"),
            ("RULE:^CN=[^,]*$/$1/", "the pattern has no groups"),
            ("RULE:^CN=(.*)$/${nope}/", "no group named `nope`"),
        ] {
            let e = MappingRules::parse(rules).unwrap_err();
            assert!(e.contains(says), "{rules}: {e}");
        }
    }

    #[test]
    fn no_rule_applies() {
        assert_eq!(name("RULE:^O=(.*)$/$1/", "CN=x").unwrap_err(), "No rules apply to CN=x, rules [RULE:^O=(.*)$/$1]");
        assert_eq!(name("", "CN=x").unwrap_err(), "No rules apply to CN=x, rules []");
        assert_eq!(MappingRules::default().name("CN=x,O=y").unwrap(), "CN=x,O=y");
    }

    #[test]
    fn java_classes_are_ascii() {
        let rules = r"RULE:^CN=(\w+)$/$1/, DEFAULT";
        assert_eq!(name(rules, "CN=Jurgen").unwrap(), "Jurgen");
        assert_eq!(name(rules, "CN=Jürgen").unwrap(), "CN=Jürgen");
        assert_eq!(name(r"RULE:^CN=([\w.]+)$/$1/,DEFAULT", "CN=a.b").unwrap(), "a.b");
        assert_eq!(name(r"RULE:^CN=([\w.]+)$/$1/,DEFAULT", "CN=é.b").unwrap(), "CN=é.b");
        assert_eq!(name(r"RULE:^CN=(\p{Alpha}+)$/$1/,DEFAULT", "CN=é").unwrap(), "CN=é");
        assert_eq!(name(r"RULE:^CN=(\d+)\s(\S+)$/$2$1/", "CN=42 x").unwrap(), "x42");
        assert_eq!(name(r"RULE:^.*\bCN=(\w+)\b.*$/$1/", "O=x,CN=bob,C=US").unwrap(), "bob");
        assert_eq!(name(r"RULE:(?i)^cn=([a-z]+)$/$1/", "CN=Bob").unwrap(), "Bob");
        assert_eq!(name(r"RULE:^CN=\Q+.*\E(.*)$/$1/", "CN=+.*x").unwrap(), "x");
        assert_eq!(name(r"RULE:^CN=a\<b\>$/ok/", "CN=a<b>").unwrap(), "ok");
        assert_eq!(name(r"RULE:^CN=\x{41}+\0102$/ok/", "CN=AAB").unwrap(), "ok");
        // Comments mode, a comment running to the end of the pattern.
        assert_eq!(name("RULE:(?x) ^CN= (.*) $  # the CN/$1/", "CN=x").unwrap(), "x");
    }

    #[test]
    fn java_features_re2_lacks_are_refused() {
        for (rules, says) in [
            (r"RULE:^CN=(a)\1$/$1/", "backreferences are not supported"),
            (r"RULE:^CN=(?<n>a)\k<n>$/$1/", "backreferences"),
            (r"RULE:^CN=(?=a).*$/x/", "look-ahead"),
            (r"RULE:^CN=(?!a).*$/x/", "look-ahead"),
            (r"RULE:^.*(?<=CN=)a$/x/", "look-behind"),
            (r"RULE:^.*(?<!O=)a$/x/", "look-behind"),
            (r"RULE:^CN=(?>a|ab)$/x/", "atomic groups"),
            (r"RULE:^CN=a*+$/x/", "possessive"),
            (r"RULE:^CN=a++$/x/", "possessive"),
            (r"RULE:^CN=a?+$/x/", "possessive"),
            (r"RULE:^CN=a{1,3}+$/x/", "possessive"),
            (r"RULE:(?U)^CN=\w$/x/", "flag `U`"),
            (r"RULE:^CN=(a$/x/", "not a regular expression"),
        ] {
            let e = MappingRules::parse(rules).unwrap_err();
            assert!(e.contains(says), "{rules}: {e}");
        }
        // Not possessive: a lazy quantifier, a `+` after a group, `\x{41}+`.
        for rules in [r"RULE:^CN=a+?$/x/", r"RULE:^CN=(a)+$/x/", r"RULE:^CN=\x{41}+$/x/", r"RULE:^CN=[a+]+$/x/"] {
            assert!(MappingRules::parse(rules).is_ok(), "{rules}");
        }
    }

    #[test]
    fn newlines_separate_rules() {
        let m = MappingRules::parse("RULE:^CN=([^,]*),OU=svc$/$1/L\n  RULE:^CN=([^,]*),.*$/$1/ \nDEFAULT\n").unwrap();
        assert_eq!(m.to_string(), "[RULE:^CN=([^,]*),OU=svc$/$1/L, RULE:^CN=([^,]*),.*$/$1, DEFAULT]");
        assert_eq!(m.name("CN=Bob,OU=svc").unwrap(), "bob");
        assert_eq!(m.name("CN=Bob,OU=eng").unwrap(), "Bob");
        assert_eq!(m.name("O=x").unwrap(), "O=x");
        // A rule does not run on into the next line.
        assert!(MappingRules::parse("RULE:^CN=(.*)$/$1\nDEFAULT").is_err());
    }

    #[test]
    fn garbage_never_panics() {
        let tokens = ["/", "\\", ",", "\n", " ", "$", "{", "}", "(", "?", "+", "é", "L", "1", "[", "]", "x", "#", "DEFAULT"];
        for a in tokens {
            for b in tokens {
                for c in tokens {
                    for prefix in ["", "RULE:", "RULE:(x)/"] {
                        if let Ok(m) = MappingRules::parse(&format!("{prefix}{a}{b}{c}")) {
                            let _ = m.name("CN=x,O=é");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn java_replace_all() {
        let re = Regex::new("a*").unwrap();
        assert_eq!(replace_all(&re, "baaab", |_, out| out.push('-')), "-b--b-");
        let re = Regex::new("é?").unwrap();
        assert_eq!(replace_all(&re, "xéy", |_, out| out.push('-')), "-x--y-");
    }
}
