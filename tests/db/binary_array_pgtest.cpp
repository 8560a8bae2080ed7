// BinaryArray against a real PostgreSQL: what the server reads from each array is exactly what
// was put in (the appender sends every event, idempotency record and expiry this way).
#include <doctest/doctest.h>

#include <pqxx/pqxx>

#include <cstdint>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "ledger/db/sql_text.hpp"
#include "test_cluster.hpp"

using namespace ledger;
using db::BinaryArray;

namespace {

// The elements as the server reads them back: `element_sql` turns each `x` into text.
std::vector<std::string> read_back(pqxx::connection& connection, BinaryArray& array,
                                   const std::string& cast, const std::string& element_sql = "x::text") {
  pqxx::work work(connection);
  const std::string bytes = array.finish();
  const auto rows = work.exec_params("SELECT " + element_sql + " FROM unnest($1::" + cast +
                                         ") WITH ORDINALITY AS u(x, n) ORDER BY n",
                                     pqxx::binarystring(bytes));
  std::vector<std::string> values;
  for (const auto& row : rows) values.push_back(row[0].as<std::string>());
  return values;
}

}  // namespace

TEST_CASE("binary arrays reach PostgreSQL element for element") {
  test::TestDatabase database;
  pqxx::connection connection(database.app_url());

  SUBCASE("bigint and smallint, to their limits") {
    BinaryArray numbers(BinaryArray::Element::int8);
    for (const std::int64_t n : {std::numeric_limits<std::int64_t>::min(), std::int64_t{-1},
                                 std::int64_t{0}, std::int64_t{256}, std::numeric_limits<std::int64_t>::max()}) {
      numbers.add_int8(n);
    }
    CHECK(numbers.size() == 5);
    CHECK(read_back(connection, numbers, "bigint[]") ==
          std::vector<std::string>{"-9223372036854775808", "-1", "0", "256", "9223372036854775807"});
    CHECK(numbers.size() == 0);  // finish() empties the builder

    BinaryArray small(BinaryArray::Element::int2);
    for (const std::int16_t n : {std::int16_t{-32768}, std::int16_t{1}, std::int16_t{32767}}) small.add_int2(n);
    CHECK(read_back(connection, small, "smallint[]") == std::vector<std::string>{"-32768", "1", "32767"});
  }

  SUBCASE("text with every character COPY or an array literal would escape, and none") {
    const std::vector<std::string> texts = {"plain", "", "tab\tnew\nline\rcr", "back\\slash \"quoted\" {a,b}",
                                            "NULL", "zł ünïcødé €"};
    BinaryArray array(BinaryArray::Element::text);
    for (const auto& text : texts) array.add_bytes(text);
    CHECK(read_back(connection, array, "text[]") == texts);
  }

  SUBCASE("bytea with every byte value, and empty") {
    std::string all_bytes;
    for (int b = 0; b < 256; ++b) all_bytes.push_back(static_cast<char>(b));
    BinaryArray array(BinaryArray::Element::bytea);
    array.add_bytes(all_bytes);
    array.add_bytes("");
    pqxx::work work(connection);
    const std::string bytes = array.finish();
    const auto rows = work.exec_params(
        "SELECT x, length(x) FROM unnest($1::bytea[]) WITH ORDINALITY AS u(x, n) ORDER BY n",
        pqxx::binarystring(bytes));
    REQUIRE(rows.size() == 2);
    CHECK(pqxx::binarystring(rows[0][0]).str() == all_bytes);
    CHECK(rows[1][1].as<int>() == 0);
  }

  SUBCASE("timestamptz from microseconds since the Unix epoch, before and after 2000") {
    const std::vector<std::int64_t> micros = {0, -1, 946'684'800'000'000, 946'684'799'999'999,
                                              1'764'720'000'123'456};
    BinaryArray array(BinaryArray::Element::timestamptz);
    for (const auto m : micros) array.add_timestamp(m);
    std::vector<std::string> expected;
    for (const auto m : micros) expected.push_back(std::to_string(m));
    CHECK(read_back(connection, array, "timestamptz[]",
                    "(extract(epoch FROM x) * 1000000)::bigint::text") == expected);
  }

  SUBCASE("uuid from its canonical text; any other spelling is refused before it is sent") {
    BinaryArray array(BinaryArray::Element::uuid);
    array.add_uuid("0189f7a2-4c1e-7d3b-9a5f-0123456789ab");
    array.add_uuid("00000000-0000-0000-0000-000000000000");
    // PostgreSQL would take some of these, but the hash chain covers the id's text and the
    // column reads back canonical: a stored non-canonical id would never verify.
    for (const char* bad : {"", "0189f7a2", "0189F7A2-4C1E-7D3B-9A5F-0123456789AB", "0189f7a24c1e7d3b9a5f0123456789ab",
                            "{0189f7a2-4c1e-7d3b-9a5f-0123456789ab}", "0189f7a2-4c1e-7d3b-9a5f-0123456789a",
                            "0189f7a2-4c1e-7d3b-9a5f-0123456789abc", "0189f7a2--4c1e-7d3b-9a5f-0123456789a",
                            "0189f7a-24c1e-7d3b-9a5f-0123456789ab", "0189f7a2-4c1e-7d3b-9a5f-0123456789ag",
                            "0189f7a2 4c1e 7d3b 9a5f 0123456789ab"}) {
      CAPTURE(bad);
      CHECK_THROWS_AS(array.add_uuid(bad), std::invalid_argument);
    }
    CHECK(array.size() == 2);  // a refused UUID adds nothing
    CHECK(read_back(connection, array, "uuid[]") ==
          std::vector<std::string>{"0189f7a2-4c1e-7d3b-9a5f-0123456789ab", "00000000-0000-0000-0000-000000000000"});
  }

  SUBCASE("a time before timestamptz's range is refused before it is sent, not wrapped") {
    constexpr std::int64_t first_time = std::int64_t{-211'813'488'000'000'000} + 946'684'800'000'000;
    BinaryArray array(BinaryArray::Element::timestamptz);
    for (const std::int64_t bad : {std::numeric_limits<std::int64_t>::min(), first_time - 1}) {
      CAPTURE(bad);
      CHECK_THROWS_AS(array.add_timestamp(bad), std::out_of_range);
    }
    CHECK(array.size() == 0);
    // Its first microsecond, and the last an int64 of Unix microseconds can name (the range
    // reaches 294276 AD: no later int64 is refused).
    array.add_timestamp(first_time);
    array.add_timestamp(std::numeric_limits<std::int64_t>::max());
    CHECK(read_back(connection, array, "timestamptz[]", "to_char(x AT TIME ZONE 'UTC', 'YYYY-MM-DD BC')") ==
          std::vector<std::string>{"4714-11-24 BC", "294247-01-10 AD"});
  }

  SUBCASE("text the server cannot store (a NUL byte, invalid UTF-8) is refused, not cut short") {
    for (const std::string& bad : {std::string("before\0after", 12), std::string("\xff\xfe")}) {
      BinaryArray array(BinaryArray::Element::text);
      array.add_bytes(bad);
      CHECK_THROWS_AS((void)read_back(connection, array, "text[]"), pqxx::data_exception);
    }
  }

  SUBCASE("a builder starts again empty after finish()") {
    BinaryArray array(BinaryArray::Element::text);
    array.add_bytes("first");
    CHECK(read_back(connection, array, "text[]") == std::vector<std::string>{"first"});
    CHECK(read_back(connection, array, "text[]").empty());
    array.add_bytes("second");
    array.add_bytes("third");
    CHECK(read_back(connection, array, "text[]") == std::vector<std::string>{"second", "third"});
  }

  SUBCASE("jsonb: the server parses the document, and refuses one that is not JSON") {
    BinaryArray array(BinaryArray::Element::jsonb);
    array.add_jsonb(R"({"b": 1, "a": "x\ty"})");
    array.add_jsonb("[]");
    CHECK(read_back(connection, array, "jsonb[]") ==
          std::vector<std::string>{R"({"a": "x\ty", "b": 1})", "[]"});
    array.add_jsonb("{not json");
    CHECK_THROWS_AS((void)read_back(connection, array, "jsonb[]"), pqxx::data_exception);
  }

  SUBCASE("an empty array has no elements") {
    BinaryArray array(BinaryArray::Element::text);
    pqxx::work work(connection);
    const std::string bytes = array.finish();
    CHECK(work.exec_params1("SELECT cardinality($1::text[])", pqxx::binarystring(bytes))[0].as<int>() == 0);
  }

  SUBCASE("an array cast to another element type is refused by the server") {
    BinaryArray array(BinaryArray::Element::int8);
    array.add_int8(7);
    CHECK_THROWS_WITH((void)read_back(connection, array, "integer[]"),
                      doctest::Contains("element type 20 (bigint) instead of expected 23 (integer)"));
  }
}
