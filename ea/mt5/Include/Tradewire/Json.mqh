//+------------------------------------------------------------------+
//| Tradewire/Json.mqh                                               |
//| A small JSON writer for EA protocol v1 messages.                 |
//|                                                                  |
//| Convention, checked by tests/test_ea_schema.py in the tradewire  |
//| repository (MQL cannot be compiled there, so the sources are     |
//| parsed instead):                                                 |
//|   w.BeginMessage("<type>")   opens a protocol message and writes |
//|                              its "type" (hello, account, ...)    |
//|   w.BeginObject("<Schema>")  opens a nested object of a protocol |
//|                              struct: Position, Tick, EAInfo      |
//|   w.Str/Int/Num/Price/Qty/Money/Null/Raw/Key/BeginArray(         |
//|     "<field>", ...)          writes one field of the innermost   |
//|                              open object                         |
//|   w.EndObject()              closes it                           |
//| Field and schema names are always string literals, and every     |
//| Begin has its End in the same function, so the checker can match |
//| every written field against the hub's schema.                    |
//+------------------------------------------------------------------+
#ifndef TRADEWIRE_JSON_MQH
#define TRADEWIRE_JSON_MQH

int g_twMoneyDigits = 2;   // ACCOUNT_CURRENCY_DIGITS, set by the EA at start

// JSON string escaping: quote, backslash and control characters. Non-ASCII text stays as it is
// and is sent as UTF-8 (TwUtf8).
string TwJsonEscape(const string s)
  {
   int n = StringLen(s);
   bool plain = true;
   for(int i = 0; i < n && plain; i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '"' || c == '\\' || c < 0x20)
         plain = false;
     }
   if(plain)
      return s;
   string out = "";
   for(int i = 0; i < n; i++)
     {
      ushort c = StringGetCharacter(s, i);
      if(c == '"')
         out += "\\\"";
      else if(c == '\\')
         out += "\\\\";
      else if(c == '\n')
         out += "\\n";
      else if(c == '\r')
         out += "\\r";
      else if(c == '\t')
         out += "\\t";
      else if(c < 0x20)
         out += StringFormat("\\u%04x", c);
      else
         out += ShortToString(c);
     }
   return out;
  }

// A number with `digits` decimals (the instrument's or the currency's precision), trailing zeros
// dropped: 1.08500 -> 1.085, 100.00 -> 100. digits < 0 means "not known": 15 significant digits.
string TwJsonNumber(const double value, const int digits)
  {
   if(!MathIsValidNumber(value))
      return "0";
   if(digits < 0)
      return StringFormat("%.15g", value);
   string s = DoubleToString(value, digits);
   if(StringFind(s, ".") >= 0)
     {
      int end = StringLen(s);
      while(end > 0 && StringGetCharacter(s, end - 1) == '0')
         end--;
      if(end > 0 && StringGetCharacter(s, end - 1) == '.')
         end--;
      s = StringSubstr(s, 0, end);
     }
   if(s == "-0" || s == "" || s == "-")
      s = "0";
   return s;
  }

class CJsonWriter
  {
private:
   string            m_buf;
   int               m_count[];    // members written so far, per open container
   int               m_depth;
   bool              m_afterKey;   // a key was written: the next value takes no comma

   void              Push(void)
     {
      m_depth++;
      ArrayResize(m_count, m_depth);
      m_count[m_depth - 1] = 0;
     }
   void              Before(void)
     {
      if(m_afterKey)
        {
         m_afterKey = false;
         return;
        }
      if(m_depth > 0)
        {
         if(m_count[m_depth - 1] > 0)
            StringAdd(m_buf, ",");
         m_count[m_depth - 1]++;
        }
     }
   void              WriteKey(const string key)
     {
      Before();
      StringAdd(m_buf, "\"" + key + "\":");
      m_afterKey = true;
     }
   void              Value(const string raw)
     {
      Before();
      StringAdd(m_buf, raw);
     }

public:
                     CJsonWriter(void) : m_buf(""), m_depth(0), m_afterKey(false) {}
   void              Reset(void) { m_buf = ""; m_depth = 0; m_afterKey = false; ArrayResize(m_count, 0); }
   string            Text(void) const { return m_buf; }
   bool              Balanced(void) const { return m_depth == 0; }

   //--- objects and arrays
   void              BeginMessage(const string type)
     {
      Before();
      StringAdd(m_buf, "{\"type\":\"" + type + "\"");
      Push();
      m_count[m_depth - 1] = 1;
     }
   void              BeginObject(const string schema)   // schema: the protocol struct this object follows
     {
      Before();
      StringAdd(m_buf, "{");
      Push();
     }
   void              EndObject(void)
     {
      StringAdd(m_buf, "}");
      if(m_depth > 0)
         m_depth--;
     }
   void              BeginArray(const string key)
     {
      WriteKey(key);
      Before();
      StringAdd(m_buf, "[");
      Push();
     }
   void              EndArray(void)
     {
      StringAdd(m_buf, "]");
      if(m_depth > 0)
         m_depth--;
     }

   //--- fields
   void              Key(const string key) { WriteKey(key); }
   void              Str(const string key, const string value) { WriteKey(key); Value("\"" + TwJsonEscape(value) + "\""); }
   void              Int(const string key, const long value) { WriteKey(key); Value(IntegerToString(value)); }
   void              Num(const string key, const double value) { WriteKey(key); Value(TwJsonNumber(value, -1)); }
   void              Price(const string key, const double value, const int digits) { WriteKey(key); Value(TwJsonNumber(value, digits)); }
   void              Qty(const string key, const double value, const int digits) { WriteKey(key); Value(TwJsonNumber(value, digits)); }
   void              Money(const string key, const double value) { WriteKey(key); Value(TwJsonNumber(value, g_twMoneyDigits)); }
   void              Null(const string key) { WriteKey(key); Value("null"); }
   void              Raw(const string key, const string json) { WriteKey(key); Value(json); }   // already JSON
   void              RawItem(const string json) { Value(json); }                               // array element
  };

// Decimals of a symbol's prices; -1 when the terminal does not know the symbol (then numbers are
// written with 15 significant digits instead of being rounded to a wrong precision).
int TwPriceDigits(const string symbol)
  {
   long digits = 0;
   if(!SymbolInfoInteger(symbol, SYMBOL_DIGITS, digits) || digits < 0)
      return -1;
   return (int)digits;
  }

// Decimals that the symbol's volume step needs (0.01 -> 2, 0.001 -> 3, 0.00000001 -> 8), at least 2.
int TwVolumeDigits(const string symbol)
  {
   double step = 0.0;
   if(!SymbolInfoDouble(symbol, SYMBOL_VOLUME_STEP, step) || step <= 0.0)
      return -1;
   int d = 0;
   double scaled = step;
   while(d < 10 && MathAbs(scaled - MathRound(scaled)) > 1e-9 * MathMax(1.0, scaled))
     {
      scaled *= 10.0;
      d++;
     }
   return d < 2 ? 2 : d;
  }

#endif
