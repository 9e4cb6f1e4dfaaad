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

/// Reads the URL API parameters from a URL (or a bare query string). `+` is a space, then
/// percent-decoding; parameter names must start with `km` (case-sensitive); the name after
/// `km_` (or `km`) decides: `i` identity, `e` event, anything else a property of that name.
/// The first occurrence of a parameter wins.
pub fn parse(url: &str) -> UrlCommands {
    let query = match url.split_once('?') {
        Some((_, q)) => q,
        None if !url.contains("://") && !url.starts_with('/') => url,
        None => "",
    };
    let query = query.split('#').next().unwrap_or("");
    let mut out = UrlCommands::default();
    for (k, v) in form_urlencoded::parse(query.as_bytes()) {
        let Some(rest) = k.strip_prefix("km") else {
            continue;
        };
        let rest = rest.strip_prefix('_').unwrap_or(rest);
        match rest {
            "" => {}
            "i" => {
                out.identity.get_or_insert_with(|| v.into_owned());
            }
            "e" => {
                out.event.get_or_insert_with(|| v.into_owned());
            }
            name => {
                if !out.properties.iter().any(|(n, _)| n == name) {
                    out.properties.push((name.to_owned(), v.into_owned()));
                }
            }
        }
    }
    out
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
    }
}
