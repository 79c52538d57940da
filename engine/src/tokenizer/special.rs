//! Splitting input text around special tokens before the model sees it, exactly as llama.cpp's
//! `tokenizer_st_partition`: control, unknown and user-defined tokens are taken in order of
//! decreasing text length, and each one cuts every remaining text fragment at all of its
//! non-overlapping occurrences (leftmost first). User-defined tokens are always matched; control
//! and unknown tokens only when parsing special tokens.
//!
//! An Aho-Corasick pass over the whole input first finds which special texts occur at all, so
//! the length-ordered passes only run for those (Gemma has about 6,400 special tokens).

use aho_corasick::AhoCorasick;

use super::vocab::TokenKind;

/// A piece of the input: text for the model, or a token matched verbatim.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fragment<'a> {
    Text(&'a str),
    Token(u32),
}

/// The special tokens of a vocabulary, in llama.cpp's matching order.
#[derive(Debug, Clone)]
pub(crate) struct SpecialTokens {
    /// Ids sorted by text length (longest first), then by id.
    ids: Vec<u32>,
    /// Whether `ids[i]` is matched only when parsing special tokens.
    special_only: Vec<bool>,
    texts: Vec<String>,
    /// Pattern `i` is `texts[i]`; `None` when the vocabulary has no special tokens.
    finder: Option<AhoCorasick>,
}

impl SpecialTokens {
    pub(crate) fn new(tokens: &[String], kinds: &[TokenKind]) -> Result<Self, String> {
        let mut ids: Vec<u32> = (0..tokens.len() as u32)
            .filter(|&id| {
                let kind = kinds[id as usize];
                !tokens[id as usize].is_empty()
                    && matches!(
                        kind,
                        TokenKind::Control | TokenKind::Unknown | TokenKind::UserDefined
                    )
            })
            .collect();
        ids.sort_by(|&a, &b| {
            tokens[b as usize]
                .len()
                .cmp(&tokens[a as usize].len())
                .then(a.cmp(&b))
        });
        let texts: Vec<String> = ids.iter().map(|&id| tokens[id as usize].clone()).collect();
        let special_only = ids
            .iter()
            .map(|&id| kinds[id as usize].is_special())
            .collect();
        let finder = if texts.is_empty() {
            None
        } else {
            Some(AhoCorasick::new(&texts).map_err(|e| e.to_string())?)
        };
        Ok(Self {
            ids,
            special_only,
            texts,
            finder,
        })
    }

    /// Cuts `text` into fragments; `parse_special` decides whether control and unknown tokens
    /// are recognised.
    pub(crate) fn partition<'a>(&self, text: &'a str, parse_special: bool) -> Vec<Fragment<'a>> {
        if text.is_empty() {
            return Vec::new();
        }
        let mut fragments = vec![Fragment::Text(text)];
        let Some(finder) = &self.finder else {
            return fragments;
        };
        let mut present: Vec<usize> = finder
            .find_overlapping_iter(text)
            .map(|m| m.pattern().as_usize())
            .filter(|&i| parse_special || !self.special_only[i])
            .collect();
        present.sort_unstable();
        present.dedup();

        for i in present {
            let needle = self.texts[i].as_str();
            let id = self.ids[i];
            let mut next = Vec::with_capacity(fragments.len() + 2);
            for fragment in fragments {
                let Fragment::Text(mut rest) = fragment else {
                    next.push(fragment);
                    continue;
                };
                while let Some(at) = rest.find(needle) {
                    if at > 0 {
                        next.push(Fragment::Text(&rest[..at]));
                    }
                    next.push(Fragment::Token(id));
                    rest = &rest[at + needle.len()..];
                }
                if !rest.is_empty() {
                    next.push(Fragment::Text(rest));
                }
            }
            fragments = next;
        }
        fragments
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn specials() -> SpecialTokens {
        let tokens: Vec<String> = ["a", "<s>", "\n", "\n\n", "ab", "bcd", "<x>"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        use TokenKind::*;
        let kinds = [
            Normal,
            Control,
            UserDefined,
            UserDefined,
            UserDefined,
            UserDefined,
            Unknown,
        ];
        SpecialTokens::new(&tokens, &kinds).unwrap()
    }

    #[test]
    fn longer_tokens_are_cut_first_like_llama_cpp() {
        use Fragment::*;
        let s = specials();
        // "bcd" (3 bytes) is taken before "ab" (2 bytes), although "ab" starts further left.
        assert_eq!(s.partition("abcd", false), vec![Text("a"), Token(5)]);
        assert_eq!(
            s.partition("x\n\n\ny", false),
            vec![Text("x"), Token(3), Token(2), Text("y")]
        );
    }

    #[test]
    fn control_tokens_only_when_parsing_special() {
        use Fragment::*;
        let s = specials();
        assert_eq!(s.partition("<s>hi<x>", false), vec![Text("<s>hi<x>")]);
        assert_eq!(
            s.partition("<s>hi<x>", true),
            vec![Token(1), Text("hi"), Token(6)]
        );
        assert!(s.partition("", true).is_empty());
    }
}
