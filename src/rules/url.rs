//! The URL API: `kmi` / `km_i` (identity), `kme` / `km_e` (event), `km_<name>` (properties).

/// What a page URL asks the tracker to do.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UrlCommands {
    /// `kmi` / `km_i`: identify as this.
    pub identity: Option<String>,
    /// `kme` / `km_e`: record this event.
    pub event: Option<String>,
    /// Every other `km…` parameter: a property, in URL order.
    pub properties: Vec<(String, String)>,
}

/// Reads the URL API parameters from a URL (or a bare query string), as km.js reads
/// `location.search`: the query ends at `#` (a `?` inside the fragment is not a query); `+` is
/// a space, then percent-decoding; a parameter whose name or value is not valid
/// percent-encoded UTF-8 (`%FF`) is skipped, as `decodeURIComponent` refuses it; parameter
/// names must start with `km` (case-sensitive); the name after `km_` (or `km`) decides: `i`
/// identity, `e` event, anything else a property of that name. The first occurrence of a
/// parameter wins.
pub fn parse(url: &str) -> UrlCommands {
    let url = url.split('#').next().unwrap_or("");
    let query = match url.split_once('?') {
        Some((_, q)) => q,
        None if !url.contains("://") && !url.starts_with('/') => url,
        None => "",
    };
    let mut out = UrlCommands::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        let (Some(k), Some(v)) = (decode(k), decode(v)) else {
            continue;
        };
        let Some(rest) = k.strip_prefix("km") else {
            continue;
        };
        let rest = rest.strip_prefix('_').unwrap_or(rest);
        match rest {
            "" => {}
            "i" => {
                out.identity.get_or_insert(v);
            }
            "e" => {
                out.event.get_or_insert(v);
            }
            name => {
                if !out.properties.iter().any(|(n, _)| n == name) {
                    out.properties.push((name.to_owned(), v));
                }
            }
        }
    }
    out
}

/// `+` as a space, then percent-decoding to UTF-8; `None` when the bytes are not UTF-8.
fn decode(s: &str) -> Option<String> {
    let s = s.replace('+', " ");
    percent_encoding::percent_decode_str(&s)
        .decode_utf8()
        .ok()
        .map(std::borrow::Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_url_api() {
        let c = parse(
            "https://shop.example/p?kmi=foo%40x.com&kme=Clicked+Ad&km_Link+Location=top&q=1&KMI=no#kmi=frag",
        );
        assert_eq!(c.identity.as_deref(), Some("foo@x.com"));
        assert_eq!(c.event.as_deref(), Some("Clicked Ad"));
        assert_eq!(
            c.properties,
            [("Link Location".to_string(), "top".to_string())]
        );
        let c = parse("/?km_i=bar&km_e=E&kmcampaign=x");
        assert_eq!(c.identity.as_deref(), Some("bar"));
        assert_eq!(c.event.as_deref(), Some("E"));
        assert_eq!(c.properties, [("campaign".to_string(), "x".to_string())]);
        assert_eq!(parse("https://x.example/"), UrlCommands::default());
        // The fragment is not the query; undecodable parameters are skipped.
        assert_eq!(
            parse("https://x.example/#/p?kmi=frag"),
            UrlCommands::default()
        );
        let c = parse("/?kmi=%FF&km_i=ok&km_%C3=x&km_a=%E2%82%AC");
        assert_eq!(c.identity.as_deref(), Some("ok"));
        assert_eq!(c.properties, [("a".to_string(), "€".to_string())]);
    }
}
