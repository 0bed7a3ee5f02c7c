//! The eight placement regions, their jurisdictions, and country → region
//! placement.

use crate::ApiError;
use serde::{Deserialize, Serialize};

#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    utoipa::ToSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Region {
    Wnam,
    Enam,
    Sam,
    Weur,
    Eeur,
    Apac,
    Oc,
    Afr,
}

/// `Eu` is a hard pin: data placed there never leaves the EU. `Global` regions
/// are best-effort placement.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Jurisdiction {
    Eu,
    Global,
}

impl Jurisdiction {
    pub fn as_str(self) -> &'static str {
        match self {
            Jurisdiction::Eu => "eu",
            Jurisdiction::Global => "global",
        }
    }

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        match raw {
            "eu" => Ok(Jurisdiction::Eu),
            "global" => Ok(Jurisdiction::Global),
            _ => Err(ApiError::validation("a jurisdiction is 'eu' or 'global'")),
        }
    }
}

impl std::fmt::Display for Jurisdiction {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Region {
    pub const ALL: [Region; 8] = [
        Region::Wnam,
        Region::Enam,
        Region::Sam,
        Region::Weur,
        Region::Eeur,
        Region::Apac,
        Region::Oc,
        Region::Afr,
    ];

    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        Self::ALL
            .into_iter()
            .find(|r| r.as_str() == raw)
            .ok_or_else(|| {
                ApiError::validation(format!(
                    "unknown region '{}'",
                    raw.chars().take(16).collect::<String>()
                ))
            })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Region::Wnam => "wnam",
            Region::Enam => "enam",
            Region::Sam => "sam",
            Region::Weur => "weur",
            Region::Eeur => "eeur",
            Region::Apac => "apac",
            Region::Oc => "oc",
            Region::Afr => "afr",
        }
    }

    pub fn jurisdiction(self) -> Jurisdiction {
        match self {
            Region::Weur | Region::Eeur => Jurisdiction::Eu,
            // Listed one by one: a region added later must be placed in a
            // jurisdiction on purpose, not fall into the unpinned one.
            Region::Wnam | Region::Enam | Region::Sam | Region::Apac | Region::Oc | Region::Afr => {
                Jurisdiction::Global
            }
        }
    }

    /// Where a best-effort region's users may go when it is down, nearest
    /// first. EU regions have none: an EU user is never placed outside the EU.
    pub fn fallbacks(self) -> &'static [Region] {
        use Region::*;
        match self {
            Weur | Eeur => &[],
            Wnam => &[Enam, Sam, Apac],
            Enam => &[Wnam, Sam],
            Sam => &[Enam, Wnam],
            Apac => &[Oc, Wnam],
            Oc => &[Apac, Wnam],
            Afr => &[Sam, Enam],
        }
    }

    /// The region nearest a country (ISO 3166-1 alpha-2; every assigned
    /// code, and `XK` for Kosovo, which proxies send). Country-level data
    /// cannot split the US or Canada by coast; both go east, where most of
    /// their population is. Remote territories go to the region nearest
    /// them, not to their sovereign's (Réunion to `afr`, Guadeloupe to
    /// `enam`); an issuer that wants EU residency for everyone says so in
    /// its policy (`residency: eu`), not through this table.
    pub fn nearest_to(country: Country) -> Option<Region> {
        use Region::*;
        let code = country.as_str();
        let region = match code {
            "US" | "CA" | "BM" | "BS" | "CU" | "DO" | "HT" | "JM" | "PR" | "TT" | "BB" | "AG"
            | "DM" | "GD" | "KN" | "LC" | "VC" | "VG" | "VI" | "KY" | "TC" | "AI" | "MS" | "PM"
            | "GL" | "GP" | "MQ" | "BL" | "MF" => Enam,
            "MX" | "GT" | "BZ" | "SV" | "HN" | "NI" | "CR" | "PA" | "UM" => Wnam,
            "BR" | "AR" | "CL" | "CO" | "PE" | "VE" | "EC" | "BO" | "PY" | "UY" | "GY" | "SR"
            | "GF" | "FK" | "AW" | "CW" | "BQ" | "SX" | "GS" => Sam,
            "AT" | "BE" | "CH" | "DE" | "DK" | "ES" | "FR" | "GB" | "IE" | "IS" | "IT" | "LI"
            | "LU" | "MC" | "NL" | "NO" | "PT" | "SE" | "AD" | "SM" | "VA" | "MT" | "FO" | "GI"
            | "GG" | "JE" | "IM" | "FI" | "AX" | "SJ" => Weur,
            "PL" | "CZ" | "SK" | "HU" | "RO" | "BG" | "GR" | "CY" | "EE" | "LV" | "LT" | "SI"
            | "HR" | "RS" | "BA" | "ME" | "MK" | "AL" | "XK" | "MD" | "UA" | "BY" | "RU" | "TR"
            | "GE" | "AM" | "AZ" | "IL" | "PS" | "JO" | "LB" | "SY" | "IQ" | "IR" | "SA" | "AE"
            | "QA" | "KW" | "BH" | "OM" | "YE" | "KZ" => Eeur,
            "CN" | "JP" | "KR" | "KP" | "TW" | "HK" | "MO" | "MN" | "IN" | "PK" | "BD" | "LK"
            | "NP" | "BT" | "MV" | "AF" | "UZ" | "TM" | "TJ" | "KG" | "MM" | "TH" | "LA" | "KH"
            | "VN" | "MY" | "SG" | "ID" | "PH" | "BN" | "TL" | "CX" | "CC" | "IO" => Apac,
            "AU" | "NZ" | "PG" | "FJ" | "SB" | "VU" | "NC" | "PF" | "WS" | "TO" | "KI" | "TV"
            | "NR" | "FM" | "MH" | "PW" | "GU" | "MP" | "AS" | "CK" | "NU" | "TK" | "WF" | "NF"
            | "PN" | "HM" | "AQ" => Oc,
            "ZA" | "NG" | "EG" | "KE" | "ET" | "GH" | "MA" | "DZ" | "TN" | "LY" | "SD" | "SS"
            | "UG" | "TZ" | "RW" | "BI" | "CD" | "CG" | "CM" | "CF" | "TD" | "NE" | "ML" | "BF"
            | "SN" | "GM" | "GN" | "GW" | "SL" | "LR" | "CI" | "TG" | "BJ" | "MR" | "CV" | "ST"
            | "GQ" | "GA" | "AO" | "ZM" | "ZW" | "MW" | "MZ" | "BW" | "NA" | "LS" | "SZ" | "MG"
            | "MU" | "SC" | "KM" | "DJ" | "ER" | "SO" | "RE" | "YT" | "SH" | "EH" | "BV" | "TF" => {
                Afr
            }
            _ => return None,
        };
        Some(region)
    }
}

impl std::fmt::Display for Region {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Region {
    type Err = ApiError;
    fn from_str(s: &str) -> Result<Self, ApiError> {
        Self::parse(s)
    }
}

/// An ISO 3166-1 alpha-2 country code, upper-cased.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

impl Country {
    /// `None` for anything that is not two ASCII letters (including the `XX`
    /// and `T1` placeholders some proxies send).
    pub fn parse(raw: &str) -> Option<Self> {
        let bytes = raw.trim().as_bytes();
        match bytes {
            [a, b] if a.is_ascii_alphabetic() && b.is_ascii_alphabetic() => {
                Some(Self([a.to_ascii_uppercase(), b.to_ascii_uppercase()]))
            }
            _ => None,
        }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("XX")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every ISO 3166-1 alpha-2 code assigned today (249, from Debian's
    /// iso-codes, `iso_3166-1.json`).
    const ISO_3166_1: &str = "
        AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE
        BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ CA CC CD
        CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
        DO DZ EC EE EG EH ER ES ET FI FJ FK FM FO FR GA GB GD GE GF
        GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU
        ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN
        KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME
        MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ NA
        NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM
        PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI
        SJ SK SL SM SN SO SR SS ST SV SX SY SZ TC TD TF TG TH TJ TK
        TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG VI
        VN VU WF WS YE YT ZA ZM ZW
    ";

    #[test]
    fn every_country_has_a_region() {
        let codes: Vec<&str> = ISO_3166_1.split_whitespace().collect();
        assert_eq!(codes.len(), 249);
        let unmapped: Vec<&&str> = codes
            .iter()
            .filter(|c| Country::parse(c).and_then(Region::nearest_to).is_none())
            .collect();
        assert!(unmapped.is_empty(), "no region for {unmapped:?}");
    }

    #[test]
    fn countries_map_to_their_nearest_region() {
        let near = |c: &str| Country::parse(c).and_then(Region::nearest_to);
        assert_eq!(near("de"), Some(Region::Weur));
        assert_eq!(near("PL"), Some(Region::Eeur));
        assert_eq!(near("BR"), Some(Region::Sam));
        assert_eq!(near("JP"), Some(Region::Apac));
        assert_eq!(near("AU"), Some(Region::Oc));
        assert_eq!(near("ZA"), Some(Region::Afr));
        assert_eq!(near("US"), Some(Region::Enam));
        assert_eq!(near("MX"), Some(Region::Wnam));
        assert_eq!(near("AX"), Some(Region::Weur));
        assert_eq!(near("GP"), Some(Region::Enam));
        assert_eq!(near("AQ"), Some(Region::Oc));
        assert_eq!(near("XX"), None);
        assert_eq!(Country::parse("T1X"), None);
    }

    #[test]
    fn eu_regions_never_fall_back() {
        for r in Region::ALL {
            let eu = r.jurisdiction() == Jurisdiction::Eu;
            assert_eq!(eu, r.fallbacks().is_empty(), "{r}");
        }
        assert!(Region::parse("mars").is_err());
        assert_eq!(Region::parse("weur").ok(), Some(Region::Weur));
    }
}
