//! Cursor pagination, the same for every list of the API (API.md "Lists"):
//! `?limit=` (default 20, at most 100) and `?starting_after=<id>` (the last
//! id of the previous page), answered with `{"data": [...], "has_more"}`,
//! newest first. A page is read with one row more than asked for, so
//! `has_more` costs no count.

use crate::ApiError;
use serde::{Deserialize, Serialize};

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// Which page of a list, as it travels on the bus (already checked).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub limit: u32,
    /// The id after which the page starts (exclusive), in the list's order.
    pub starting_after: Option<String>,
}

impl Default for Page {
    fn default() -> Self {
        Self {
            limit: DEFAULT_LIMIT,
            starting_after: None,
        }
    }
}

impl Page {
    /// From the query parameters: `limit` within 1..=100 (`validation_failed`
    /// otherwise), `starting_after` as given (the list checks its prefix).
    pub fn parse(limit: Option<&str>, starting_after: Option<&str>) -> Result<Self, ApiError> {
        let limit = match limit {
            None => DEFAULT_LIMIT,
            Some(raw) => match raw.trim().parse::<u32>() {
                Ok(n) if (1..=MAX_LIMIT).contains(&n) => n,
                _ => {
                    return Err(ApiError::validation(format!(
                        "limit must be a whole number from 1 to {MAX_LIMIT}"
                    )))
                }
            },
        };
        let starting_after = match starting_after {
            None => None,
            Some("") => return Err(ApiError::validation("starting_after must not be empty")),
            Some(raw) if raw.len() > 64 => {
                return Err(ApiError::validation("starting_after is not an id"))
            }
            Some(raw) => Some(raw.to_owned()),
        };
        Ok(Self {
            limit,
            starting_after,
        })
    }

    /// The limit as the store reads it: one row more than the page.
    pub fn fetch(&self) -> i64 {
        i64::from(self.limit.clamp(1, MAX_LIMIT)) + 1
    }

    /// Cuts the extra row off: the page and whether more follow.
    pub fn cut<T>(&self, mut rows: Vec<T>) -> (Vec<T>, bool) {
        let limit = self.limit.clamp(1, MAX_LIMIT) as usize;
        let has_more = rows.len() > limit;
        rows.truncate(limit);
        (rows, has_more)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_are_bounded_and_the_extra_row_becomes_has_more() {
        assert_eq!(Page::parse(None, None).map(|p| p.limit).ok(), Some(20));
        assert_eq!(
            Page::parse(Some("100"), None).map(|p| p.limit).ok(),
            Some(100)
        );
        for bad in ["0", "101", "-1", "x", ""] {
            assert!(Page::parse(Some(bad), None).is_err(), "{bad}");
        }
        assert!(Page::parse(None, Some("")).is_err());
        let page = Page::parse(Some("2"), None).unwrap_or_default();
        assert_eq!(page.fetch(), 3);
        assert_eq!(page.cut(vec![1, 2, 3]), (vec![1, 2], true));
        assert_eq!(page.cut(vec![1, 2]), (vec![1, 2], false));
    }
}
