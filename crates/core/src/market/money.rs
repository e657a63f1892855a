//! Money as exact integers. An [`Amount`] counts the smallest unit of the configured currency; a
//! [`Price`] is such units per MB (10^6 bytes); an [`Accrual`] accumulates price × bytes exactly,
//! carrying the fraction of a unit so nothing is lost to rounding however small the steps.
//! Config files and the API use decimal strings, converted exactly by [`Currency`].

use std::fmt;

/// Bytes in the MB that prices are quoted per.
pub const BYTES_PER_MB: u64 = 1_000_000;

/// A non-negative amount of money, in the currency's smallest unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Amount(pub u64);

impl Amount {
    pub const ZERO: Amount = Amount(0);
    pub fn checked_add(self, o: Amount) -> Option<Amount> {
        self.0.checked_add(o.0).map(Amount)
    }
    pub fn saturating_sub(self, o: Amount) -> Amount {
        Amount(self.0.saturating_sub(o.0))
    }
}

/// A price per MB, in the currency's smallest unit.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Price(pub u64);

/// A signed amount: a balance (positive: the neighbor owes us).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Balance(pub i128);

impl Balance {
    pub fn of(a: Amount) -> Balance {
        Balance(a.0 as i128)
    }
}

impl std::ops::Add for Balance {
    type Output = Balance;
    fn add(self, o: Balance) -> Balance {
        Balance(self.0 + o.0)
    }
}

impl std::ops::Sub for Balance {
    type Output = Balance;
    fn sub(self, o: Balance) -> Balance {
        Balance(self.0 - o.0)
    }
}

impl std::ops::Neg for Balance {
    type Output = Balance;
    fn neg(self) -> Balance {
        Balance(-self.0)
    }
}

/// An exact running total of `price × bytes / BYTES_PER_MB`: whole units plus the millionths of
/// a unit not yet whole. Adding in many small steps gives exactly the same result as adding the
/// sum at once (for the same price).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Accrual {
    pub units: u64,
    /// Millionths of a unit, always below 1,000,000.
    pub micros: u32,
}

impl Accrual {
    pub fn new(units: u64, micros: u32) -> Option<Accrual> {
        (micros < BYTES_PER_MB as u32).then_some(Accrual { units, micros })
    }

    /// Add the charge for `bytes` at `price`. Saturates at u64::MAX units (unreachable in
    /// practice: 1.8e19 units).
    pub fn add(&mut self, price: Price, bytes: u64) {
        let num = price.0 as u128 * bytes as u128 + self.micros as u128;
        let whole = num / BYTES_PER_MB as u128;
        self.micros = (num % BYTES_PER_MB as u128) as u32;
        self.units = self.units.saturating_add(whole.min(u64::MAX as u128) as u64);
    }

    /// The exact value in millionths of a unit.
    pub fn as_micros(&self) -> u128 {
        self.units as u128 * BYTES_PER_MB as u128 + self.micros as u128
    }

    /// The accrual worth `micros` millionths of a unit (saturating at u64::MAX units).
    pub fn from_micros(micros: u128) -> Accrual {
        let units = (micros / BYTES_PER_MB as u128).min(u64::MAX as u128) as u64;
        Accrual { units, micros: (micros % BYTES_PER_MB as u128) as u32 }
    }
}

/// How decimal amounts are written: the currency's name and how many decimals its smallest unit
/// has (e.g. "USD" with 6 decimals: 1 unit = 0.000001 USD).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Currency {
    pub name: String,
    pub decimals: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("{0:?} is not a decimal number")]
    NotDecimal(String),
    #[error("{text:?} has more than {decimals} decimals, the precision of the currency")]
    TooPrecise { text: String, decimals: u8 },
    #[error("{0:?} is too large")]
    TooLarge(String),
    #[error("{0:?} is negative")]
    Negative(String),
}

impl Currency {
    pub const MAX_DECIMALS: u8 = 12;

    /// Parse a non-negative decimal like "0.0025" into smallest units, exactly.
    pub fn parse(&self, text: &str) -> Result<u64, AmountError> {
        let t = text.trim();
        if t.starts_with('-') {
            return Err(AmountError::Negative(text.into()));
        }
        let (int, frac) = match t.split_once('.') {
            Some((i, f)) => (i, f),
            None => (t, ""),
        };
        let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if (int.is_empty() && frac.is_empty()) || !digits(int) || !digits(frac) || (t.contains('.') && frac.is_empty())
        {
            return Err(AmountError::NotDecimal(text.into()));
        }
        let frac_trimmed = frac.trim_end_matches('0');
        if frac_trimmed.len() > self.decimals as usize {
            return Err(AmountError::TooPrecise { text: text.into(), decimals: self.decimals });
        }
        let scale = 10u128.pow(self.decimals as u32);
        let int_v: u128 =
            if int.is_empty() { 0 } else { int.parse().map_err(|_| AmountError::TooLarge(text.into()))? };
        let mut frac_v: u128 = 0;
        for (i, b) in frac_trimmed.bytes().enumerate() {
            frac_v += (b - b'0') as u128 * 10u128.pow((self.decimals as usize - 1 - i) as u32);
        }
        let v =
            int_v.checked_mul(scale).and_then(|v| v.checked_add(frac_v)).ok_or(AmountError::TooLarge(text.into()))?;
        u64::try_from(v).map_err(|_| AmountError::TooLarge(text.into()))
    }

    /// Format smallest units as a decimal string with all the currency's decimals.
    pub fn format(&self, units: u64) -> String {
        self.format_signed(units as i128)
    }

    pub fn format_signed(&self, units: i128) -> String {
        let scale = 10i128.pow(self.decimals as u32);
        let sign = if units < 0 { "-" } else { "" };
        let a = units.unsigned_abs();
        if self.decimals == 0 {
            return format!("{sign}{a}");
        }
        format!("{sign}{}.{:0width$}", a / scale as u128, a % scale as u128, width = self.decimals as usize)
    }
}

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} units", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn usd() -> Currency {
        Currency { name: "USD".into(), decimals: 6 }
    }

    #[test]
    fn decimals_parse_exactly() {
        let c = usd();
        assert_eq!(c.parse("0.002"), Ok(2000));
        assert_eq!(c.parse("2"), Ok(2_000_000));
        assert_eq!(c.parse("1.5"), Ok(1_500_000));
        assert_eq!(c.parse(".5"), Ok(500_000));
        assert_eq!(c.parse("0.000001"), Ok(1));
        assert_eq!(c.parse("0.0000010"), Ok(1), "trailing zeros are not extra precision");
        assert_eq!(c.parse(" 3 "), Ok(3_000_000));
    }

    #[test]
    fn bad_decimals_are_rejected_with_reasons() {
        let c = usd();
        assert_eq!(c.parse("0.0000001"), Err(AmountError::TooPrecise { text: "0.0000001".into(), decimals: 6 }));
        assert_eq!(c.parse("-1"), Err(AmountError::Negative("-1".into())));
        for bad in ["", ".", "1.", "abc", "1e3", "1,5", "1.2.3", "+1", "0x10"] {
            assert_eq!(c.parse(bad), Err(AmountError::NotDecimal(bad.into())), "{bad:?}");
        }
        assert_eq!(c.parse("99999999999999999999"), Err(AmountError::TooLarge("99999999999999999999".into())));
    }

    #[test]
    fn formatting_shows_every_decimal() {
        let c = usd();
        assert_eq!(c.format(2000), "0.002000");
        assert_eq!(c.format_signed(-1_500_000), "-1.500000");
        assert_eq!(Currency { name: "sat".into(), decimals: 0 }.format(42), "42");
    }

    #[test]
    fn accrual_carries_fractions() {
        let mut a = Accrual::default();
        // 1 unit per MB, one byte at a time for 1.5 MB: exactly 1 unit and half a unit pending.
        for _ in 0..1_500_000 {
            a.add(Price(1), 1);
        }
        assert_eq!(a, Accrual { units: 1, micros: 500_000 });
    }

    proptest! {
        #[test]
        fn parse_format_round_trip(units in any::<u64>()) {
            let c = usd();
            prop_assert_eq!(c.parse(&c.format(units)), Ok(units));
        }

        #[test]
        fn accrual_in_steps_equals_accrual_at_once(price in 0u64..10_000_000, steps in proptest::collection::vec(0u64..5_000_000, 0..50)) {
            let mut stepped = Accrual::default();
            for s in &steps {
                stepped.add(Price(price), *s);
            }
            let mut once = Accrual::default();
            once.add(Price(price), steps.iter().sum());
            prop_assert_eq!(stepped, once);
            prop_assert_eq!(once.as_micros(), price as u128 * steps.iter().sum::<u64>() as u128);
        }
    }
}
