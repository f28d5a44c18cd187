//! The common units of the Ontology of units of Measure 2.0 (`om2:`), which ValueFlows uses
//! for every quantity: known by their OM names (`om2:kilogram`, or `kilogram` as a file's
//! `hasUnit`), with OM's English label and symbol.

use super::expand::OM2;
use crate::vf::Unit;

/// `(OM local name, label, symbol)` of the units Reflow knows without a file defining them.
pub const OM_UNITS: [(&str, &str, &str); 40] = [
    ("one", "one", "1"),
    ("percent", "percent", "%"),
    ("gram", "gram", "g"),
    ("kilogram", "kilogram", "kg"),
    ("milligram", "milligram", "mg"),
    ("tonne", "tonne", "t"),
    ("metre", "metre", "m"),
    ("millimetre", "millimetre", "mm"),
    ("centimetre", "centimetre", "cm"),
    ("kilometre", "kilometre", "km"),
    ("squareMetre", "square metre", "m2"),
    ("squareCentimetre", "square centimetre", "cm2"),
    ("hectare", "hectare", "ha"),
    ("cubicMetre", "cubic metre", "m3"),
    ("cubicCentimetre", "cubic centimetre", "cm3"),
    ("litre", "litre", "l"),
    ("millilitre", "millilitre", "ml"),
    ("second-Time", "second", "s"),
    ("minute-Time", "minute", "min"),
    ("hour", "hour", "h"),
    ("day", "day", "d"),
    ("week", "week", "wk"),
    ("month", "month", "mo"),
    ("year", "year", "a"),
    ("joule", "joule", "J"),
    ("kilojoule", "kilojoule", "kJ"),
    ("watt", "watt", "W"),
    ("kilowatt", "kilowatt", "kW"),
    ("wattHour", "watt hour", "W h"),
    ("kilowattHour", "kilowatt hour", "kW h"),
    ("megawattHour", "megawatt hour", "MW h"),
    ("degreeCelsius", "degree Celsius", "°C"),
    ("kelvin", "kelvin", "K"),
    ("volt", "volt", "V"),
    ("ampere", "ampere", "A"),
    ("bar", "bar", "bar"),
    ("pascal", "pascal", "Pa"),
    ("kilogramPerCubicMetre", "kilogram per cubic metre", "kg/m3"),
    ("kilometrePerHour", "kilometre per hour", "km/h"),
    ("metrePerSecond-Time", "metre per second", "m/s"),
];

/// The OM unit with IRI `iri` (`http://www.ontology-of-units-of-measure.org/resource/om-2/kilogram`),
/// as a Reflow unit whose id is that IRI.
pub fn om_unit(iri: &str) -> Option<Unit> {
    let local = iri.strip_prefix(OM2)?;
    OM_UNITS
        .iter()
        .find(|(name, _, _)| *name == local)
        .map(|(_, label, symbol)| Unit::new(iri, *label, *symbol))
}

/// The OM IRI of a bare unit name as the spec's examples write it (`kilogram`, `one`,
/// `hour`), if it is one of [`OM_UNITS`].
pub fn om_iri(name: &str) -> Option<String> {
    OM_UNITS
        .iter()
        .any(|(n, _, _)| *n == name)
        .then(|| format!("{OM2}{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_by_name_and_iri() {
        let kg = om_unit(&format!("{OM2}kilogram")).expect("kilogram");
        assert_eq!((kg.label.as_str(), kg.symbol.as_str()), ("kilogram", "kg"));
        assert_eq!(om_iri("hour").as_deref(), Some(&*format!("{OM2}hour")));
        assert!(om_iri("furlong").is_none());
        assert!(om_unit("http://example.org/kilogram").is_none());
    }
}
