//+------------------------------------------------------------------+
//| TradewireEA.mq4                                                  |
//| Streams one MT4 account to a tradewire hub: EA protocol v1 over  |
//| HTTP. MQL4 has no sockets, so WebRequest POSTs                   |
//| /ea/v1/batch on a timer: {"hello": {...}, "messages": [...]}     |
//| answered by {"ackedSeq": N, "errors": [...]} after the hub has   |
//| committed. No DLL.                                               |
//|                                                                  |
//| MT4 has no trade events: open market orders are diffed by ticket |
//| on every timer tick into OPEN / MODIFY / CLOSE (CLOSE details    |
//| from the history pool). Durable events wait in the outbox file   |
//| (seq + unacked messages, under MQL4/Files) until an answer acks  |
//| them, so a restart or an unreachable hub loses nothing.          |
//|                                                                  |
//| Attach to ONE chart per account. Add the hub's base URL (e.g.    |
//| https://hub.example.com) in Tools > Options > Expert Advisors >  |
//| "Allow WebRequest for listed URL".                               |
//|                                                                  |
//| This file is self-contained (MT4 and MT5 keep separate include   |
//| folders): its JSON writer and outbox follow the MT5 EA's         |
//| Include/Tradewire/Json.mqh and Outbox.mqh.                       |
//+------------------------------------------------------------------+
#property copyright   "tradewire"
#property version     "1.00"
#property description "Streams this account to a tradewire hub (EA protocol v1, HTTP batches)."
#property description "Allow the hub's URL in Tools > Options > Expert Advisors; one chart per account."
#property strict

#define TW_EA_NAME        "TradewireEA"
#define TW_EA_VERSION     "1.0.0"
#define TW_TIMER_MS       500
#define TW_HTTP_TIMEOUT   5000
#define TW_CLOSE_GRACE_MS 30000    // a vanished order waits this long for the history to show it closed
#define TW_MAX_BODY_BYTES 524288   // well under the hub's 1 MiB limit

enum ENUM_TW_LOG_LEVEL
  {
   TW_LOG_ERROR = 0,   // errors only
   TW_LOG_WARN  = 1,   // + warnings
   TW_LOG_INFO  = 2,   // + connections and trade events
   TW_LOG_DEBUG = 3    // + every request
  };

//--- inputs
input string            InpServerUrl       = "https://hub.example.com"; // Hub base URL (https://host[:port])
input string            InpToken           = "";                        // EA token: tradewire token issue --account ID
input string            InpSymbols         = "";                        // Ticks for these symbols, comma-separated ("" = this chart's)
input int               InpHeartbeatSec    = 10;                        // Heartbeat seconds: hello is repeated this often
input string            InpSystemMagics    = "";                        // System magic numbers, comma-separated (tagged in the log)
input ENUM_TW_LOG_LEVEL InpLogLevel        = TW_LOG_INFO;               // Log level
input int               InpPostIntervalSec = 2;                         // POST every N seconds (sooner for new trade events)
input int               InpSnapshotSec     = 5;                         // Full order set every N seconds
input bool              InpCommonFolder    = false;                     // Outbox file in the terminals' common Files folder

//+------------------------------------------------------------------+
//| Logging                                                          |
//+------------------------------------------------------------------+
int g_twLogLevel = TW_LOG_INFO;

void TwLog(const int level, const string text)
  {
   if(level > g_twLogLevel)
      return;
   string tag = (level == TW_LOG_ERROR ? "ERROR" : level == TW_LOG_WARN ? "WARN" : level == TW_LOG_INFO ? "INFO" : "DEBUG");
   Print(tag, " ", text);
  }
void TwError(const string text) { TwLog(TW_LOG_ERROR, text); }
void TwWarn(const string text)  { TwLog(TW_LOG_WARN, text); }
void TwInfo(const string text)  { TwLog(TW_LOG_INFO, text); }
void TwDebug(const string text) { TwLog(TW_LOG_DEBUG, text); }

//+------------------------------------------------------------------+
//| Strings                                                          |
//+------------------------------------------------------------------+
string TwTrim(const string s) { return StringTrimRight(StringTrimLeft(s)); }   // MQL4: they return the result

string TwLower(const string s)
  {
   string t = s;
   StringToLower(t);
   return t;
  }

bool TwStartsWith(const string s, const string prefix)
  {
   return StringLen(s) >= StringLen(prefix) && StringSubstr(s, 0, StringLen(prefix)) == prefix;
  }

bool TwEndsWith(const string s, const string suffix)
  {
   int n = StringLen(s), m = StringLen(suffix);
   return n >= m && StringSubstr(s, n - m) == suffix;
  }

// Text as UTF-8 bytes, without the terminating zero StringToCharArray adds.
int TwUtf8(const string text, char &out[])
  {
   ArrayResize(out, 0);
   if(StringLen(text) == 0)
      return 0;
   int n = StringToCharArray(text, out, 0, WHOLE_ARRAY, CP_UTF8);
   if(n > 0 && out[n - 1] == 0)
      n--;
   ArrayResize(out, n);
   return n;
  }

int TwSplitList(const string text, string &items[])
  {
   ArrayResize(items, 0);
   string parts[];
   int n = StringSplit(text, ',', parts);
   for(int i = 0; i < n; i++)
     {
      string item = TwTrim(parts[i]);
      if(item == "")
         continue;
      int k = ArraySize(items);
      ArrayResize(items, k + 1);
      items[k] = item;
     }
   return ArraySize(items);
  }

// A field of the hub's flat JSON answer ({"ackedSeq":42,"errors":[],...}), as raw text.
string TwJsonRaw(const string json, const string name)
  {
   string needle = "\"" + name + "\":";
   int at = StringFind(json, needle);
   if(at < 0)
      return "";
   int i = at + StringLen(needle);
   int n = StringLen(json);
   while(i < n && StringGetCharacter(json, i) == ' ')
      i++;
   if(i >= n)
      return "";
   if(StringGetCharacter(json, i) == '"')
     {
      int end = i + 1;
      while(end < n && StringGetCharacter(json, end) != '"')
         end += StringGetCharacter(json, end) == '\\' ? 2 : 1;
      return StringSubstr(json, i + 1, end - i - 1);
     }
   int end = i;
   int depth = 0;
   while(end < n)
     {
      ushort c = StringGetCharacter(json, end);
      if(c == '[' || c == '{')
         depth++;
      else if(c == ']' || c == '}')
        {
         if(depth == 0)
            break;
         depth--;
        }
      else if(c == ',' && depth == 0)
         break;
      end++;
     }
   return TwTrim(StringSubstr(json, i, end - i));   // an array or object value keeps its brackets
  }

long TwJsonLong(const string json, const string name, const long fallback)
  {
   string raw = TwJsonRaw(json, name);
   if(raw == "" || raw == "null")
      return fallback;
   return StringToInteger(raw);
  }

//+------------------------------------------------------------------+
//| JSON writer: the same contract as the MT5 EA's Json.mqh, checked |
//| by tests/test_ea_schema.py: BeginMessage("<type>"),              |
//| BeginObject("<Schema>"), field calls with literal names,         |
//| EndObject() in the same function.                                |
//+------------------------------------------------------------------+
int g_twMoneyDigits = 2;

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

// `digits` decimals, trailing zeros dropped; digits < 0: 15 significant digits.
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
   int               m_count[];
   int               m_depth;
   bool              m_afterKey;

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
   string            Text(void) const { return m_buf; }
   int               Size(void) const { return StringLen(m_buf); }

   void              BeginMessage(const string type)
     {
      Before();
      StringAdd(m_buf, "{\"type\":\"" + type + "\"");
      Push();
      m_count[m_depth - 1] = 1;
     }
   void              BeginObject(const string schema)
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
   void              Key(const string key) { WriteKey(key); }
   void              Str(const string key, const string value) { WriteKey(key); Value("\"" + TwJsonEscape(value) + "\""); }
   void              Int(const string key, const long value) { WriteKey(key); Value(IntegerToString(value)); }
   void              Num(const string key, const double value) { WriteKey(key); Value(TwJsonNumber(value, -1)); }
   void              Price(const string key, const double value, const int digits) { WriteKey(key); Value(TwJsonNumber(value, digits)); }
   void              Qty(const string key, const double value, const int digits) { WriteKey(key); Value(TwJsonNumber(value, digits)); }
   void              Money(const string key, const double value) { WriteKey(key); Value(TwJsonNumber(value, g_twMoneyDigits)); }
   void              Null(const string key) { WriteKey(key); Value("null"); }
   void              Raw(const string key, const string json) { WriteKey(key); Value(json); }
   void              RawItem(const string json) { Value(json); }
  };

int TwPriceDigits(const string symbol)
  {
   long digits = 0;
   if(!SymbolInfoInteger(symbol, SYMBOL_DIGITS, digits) || digits < 0)
      return -1;
   return (int)digits;
  }

int TwVolumeDigits(const string symbol)
  {
   double step = MarketInfo(symbol, MODE_LOTSTEP);
   if(step <= 0.0)
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

//+------------------------------------------------------------------+
//| Outbox: seq + unacked durable messages + the EA's own lines      |
//| (known orders, broker offset), in one file rewritten atomically. |
//| Same format and rules as the MT5 EA's Outbox.mqh.                |
//+------------------------------------------------------------------+
string TwRenumber(const string json, const long seq)
  {
   int at = StringFind(json, "\"seq\":");
   if(at < 0)
      return json;
   int v = at + 6;
   int e = v;
   int n = StringLen(json);
   while(e < n)
     {
      ushort c = StringGetCharacter(json, e);
      if(c < '0' || c > '9')
         break;
      e++;
     }
   string out = StringSubstr(json, 0, v) + IntegerToString(seq) + StringSubstr(json, e);
   int idAt = StringFind(out, "\"id\":\"");
   if(idAt < 0)
      return out;
   int a = idAt + 6;
   int b = StringFind(out, "\"", a);
   if(b < 0)
      return out;
   string id = StringSubstr(out, a, b - a);
   int dash = -1;
   for(int p = StringFind(id, "-"); p >= 0; p = StringFind(id, "-", p + 1))
      dash = p;
   string renamed = (dash >= 0 ? StringSubstr(id, 0, dash + 1) : id + "-") + IntegerToString(seq);
   return StringSubstr(out, 0, a) + renamed + StringSubstr(out, b);
  }

class CTwOutbox
  {
private:
   string            m_file;
   int               m_common;
   long              m_seq;
   bool              m_synced;
   long              m_seqs[];
   string            m_msgs[];
   string            m_extra[];

public:
                     CTwOutbox(void) : m_file(""), m_common(0), m_seq(0), m_synced(false) {}
   string            File(void) const { return m_file; }
   long              Seq(void) const { return m_seq; }
   bool              Synced(void) const { return m_synced; }
   long              NextSeq(void) const { return m_seq + 1; }
   int               Count(void) const { return ArraySize(m_seqs); }
   long              SeqAt(const int i) const { return m_seqs[i]; }
   string            MessageAt(const int i) const { return m_msgs[i]; }

   bool              Open(const string file, const bool common)
     {
      m_file = file;
      m_common = common ? FILE_COMMON : 0;
      m_seq = 0;
      m_synced = false;
      ArrayResize(m_seqs, 0);
      ArrayResize(m_msgs, 0);
      ArrayResize(m_extra, 0);
      FolderCreate("Tradewire", m_common);
      if(!FileIsExist(file, m_common))
         return true;
      int h = FileOpen(file, FILE_READ | FILE_BIN | FILE_SHARE_READ | m_common);
      if(h == INVALID_HANDLE)
         return false;
      int size = (int)FileSize(h);
      uchar bytes[];
      if(size > 0)
         FileReadArray(h, bytes, 0, size);
      FileClose(h);
      string text = size > 0 ? CharArrayToString(bytes, 0, size, CP_UTF8) : "";
      string lines[];
      int count = StringSplit(text, '\n', lines);
      if(count < 1 || !TwStartsWith(lines[0], "TWOUTBOX 1"))
        {
         FileMove(file, m_common, file + ".broken", FILE_REWRITE | m_common);
         TwError("outbox " + file + " was unreadable: moved to " + file + ".broken, starting a new one");
         return true;
        }
      for(int i = 1; i < count; i++)
        {
         string line = lines[i];
         StringReplace(line, "\r", "");
         if(line == "")
            continue;
         if(TwStartsWith(line, "seq "))
            m_seq = StringToInteger(StringSubstr(line, 4));
         else if(TwStartsWith(line, "synced "))
            m_synced = StringToInteger(StringSubstr(line, 7)) != 0;
         else if(TwStartsWith(line, "msg "))
           {
            int space = StringFind(line, " ", 4);
            if(space < 0)
               continue;
            long seq = StringToInteger(StringSubstr(line, 4, space - 4));
            int k = ArraySize(m_seqs);
            ArrayResize(m_seqs, k + 1);
            ArrayResize(m_msgs, k + 1);
            m_seqs[k] = seq;
            m_msgs[k] = StringSubstr(line, space + 1);
            if(seq > m_seq)
               m_seq = seq;
           }
         else
           {
            int k = ArraySize(m_extra);
            ArrayResize(m_extra, k + 1);
            m_extra[k] = line;
           }
        }
      return true;
     }

   bool              Save(void)
     {
      string text = "TWOUTBOX 1\nseq " + IntegerToString(m_seq) + "\nsynced " + (m_synced ? "1" : "0") + "\n";
      for(int i = 0; i < ArraySize(m_seqs); i++)
         text += "msg " + IntegerToString(m_seqs[i]) + " " + m_msgs[i] + "\n";
      for(int i = 0; i < ArraySize(m_extra); i++)
         text += m_extra[i] + "\n";
      string tmp = m_file + ".tmp";
      int h = FileOpen(tmp, FILE_WRITE | FILE_BIN | m_common);
      if(h == INVALID_HANDLE)
         return false;
      char bytes[];
      int n = TwUtf8(text, bytes);
      uint written = n > 0 ? FileWriteArray(h, bytes, 0, n) : 0;
      FileFlush(h);
      FileClose(h);
      if((int)written != n)
         return false;
      return FileMove(tmp, m_common, m_file, FILE_REWRITE | m_common);
     }

   void              Append(const long seq, const string json)
     {
      int k = ArraySize(m_seqs);
      ArrayResize(m_seqs, k + 1);
      ArrayResize(m_msgs, k + 1);
      m_seqs[k] = seq;
      m_msgs[k] = json;
      if(seq > m_seq)
         m_seq = seq;
     }

   int               Ack(const long seq)
     {
      int keep = 0;
      int n = ArraySize(m_seqs);
      for(int i = 0; i < n; i++)
        {
         if(m_seqs[i] <= seq)
            continue;
         m_seqs[keep] = m_seqs[i];
         m_msgs[keep] = m_msgs[i];
         keep++;
        }
      ArrayResize(m_seqs, keep);
      ArrayResize(m_msgs, keep);
      return n - keep;
     }

   // Drop the message with this id (the hub refused it for good). Returns how many were dropped.
   int               Refuse(const string id)
     {
      string needle = "\"id\":\"" + id + "\"";
      int keep = 0;
      int n = ArraySize(m_seqs);
      for(int i = 0; i < n; i++)
        {
         if(StringFind(m_msgs[i], needle) >= 0)
            continue;
         m_seqs[keep] = m_seqs[i];
         m_msgs[keep] = m_msgs[i];
         keep++;
        }
      ArrayResize(m_seqs, keep);
      ArrayResize(m_msgs, keep);
      return n - keep;
     }

   // See Outbox.mqh (MT5): renumber never-sent messages above the hub's seq, else ack.
   bool              OnWelcome(const long ackedSeq)
     {
      bool renumber = ackedSeq > m_seq || (!m_synced && ackedSeq > 0);
      m_synced = true;
      if(!renumber)
        {
         Ack(ackedSeq);
         return false;
        }
      long seq = ackedSeq;
      for(int i = 0; i < ArraySize(m_seqs); i++)
        {
         seq++;
         m_seqs[i] = seq;
         m_msgs[i] = TwRenumber(m_msgs[i], seq);
        }
      m_seq = seq > ackedSeq ? seq : ackedSeq;
      return ArraySize(m_seqs) > 0;
     }

   void              SetExtra(const string &lines[])
     {
      ArrayResize(m_extra, ArraySize(lines));
      for(int i = 0; i < ArraySize(lines); i++)
         m_extra[i] = lines[i];
     }
   int               Extra(string &lines[]) const
     {
      ArrayResize(lines, ArraySize(m_extra));
      for(int i = 0; i < ArraySize(m_extra); i++)
         lines[i] = m_extra[i];
      return ArraySize(lines);
     }
  };

//+------------------------------------------------------------------+
//| State                                                            |
//+------------------------------------------------------------------+
struct TwOrder
  {
   long              ticket;       // MT4: the position's id and ticket
   string            symbol;
   int               side;         // 0 buy, 1 sell
   double            lots;
   double            openPrice;
   double            sl;
   double            tp;
   double            price;
   double            profit;
   double            swap;
   double            commission;
   long              magic;
   string            comment;
   long              openTimeMs;   // UTC
   uint              goneSince;    // GetTickCount() when first missed, 0 while open
  };

CTwOutbox g_outbox;
TwOrder   g_known[];
string    g_symbols[];
long      g_systemMagics[];
string    g_batchUrl = "";
bool      g_ready = false;
int       g_tz = 0;                  // broker time - UTC, seconds (MT4 has no TimeTradeServer)
bool      g_tzKnown = false;
bool      g_needWelcome = true;      // learn ackedSeq with a hello-only POST first
bool      g_needHello = true;
int       g_failures = 0;
uint      g_retryAt = 0;
bool      g_waiting = false;
uint      g_lastPost = 0;
uint      g_lastOk = 0;
uint      g_lastSnapshot = 0;
bool      g_scanned = false;         // a scan ran while connected: g_known is the terminal's open set
int       g_heartbeatSec = 10;
int       g_maxMessages = 200;
int       g_webError = 0;
bool      g_stateDirty = false;
bool      g_saveFailed = false;
string    g_lockName = "";

void TwOrderClear(TwOrder &o)
  {
   o.ticket = 0;
   o.symbol = "";
   o.side = 0;
   o.lots = 0.0;
   o.openPrice = 0.0;
   o.sl = 0.0;
   o.tp = 0.0;
   o.price = 0.0;
   o.profit = 0.0;
   o.swap = 0.0;
   o.commission = 0.0;
   o.magic = 0;
   o.comment = "";
   o.openTimeMs = 0;
   o.goneSince = 0;
  }

bool TwSame(const double a, const double b)
  {
   return MathAbs(a - b) <= 1e-10 * MathMax(1.0, MathMax(MathAbs(a), MathAbs(b)));
  }

bool IsSystemMagic(const long magic)
  {
   for(int i = 0; i < ArraySize(g_systemMagics); i++)
      if(g_systemMagics[i] == magic)
         return true;
   return false;
  }

string SideName(const int side) { return side == 0 ? "buy" : "sell"; }

uint TwElapsed(const uint since) { return GetTickCount() - since; }   // wrap-safe

void TwPush(string &items[], const string item)
  {
   if(item == "")
      return;
   int k = ArraySize(items);
   ArrayResize(items, k + 1);
   items[k] = item;
  }

// Broker time - UTC from the last quote's server time; only a fresh quote tells (MT4 has no
// TimeTradeServer and TimeCurrent() stops while the market is closed). A quote that stopped n x 15
// minutes ago looks fresh to the rounding below and gives an offset hours off: only a server time seen
// moving forward since the last look, by no more than the time that passed, is believed (at connect
// TimeCurrent() jumps from the last session's time to the server's last quote, which may be stale).
datetime g_lastServerTime = 0;
uint     g_lastServerTick = 0;   // GetTickCount() at that look

void UpdateBrokerOffset()
  {
   datetime server = TimeCurrent();
   uint tick = GetTickCount();
   long advanced = (long)server - (long)g_lastServerTime;
   bool moving = g_lastServerTime != 0 && advanced > 0 && advanced <= (long)((tick - g_lastServerTick) / 1000) + 5;
   g_lastServerTime = server;
   g_lastServerTick = tick;
   if(!moving)
      return;
   long diff = (long)server - (long)TimeGMT();
   long offset = (long)MathRound(diff / 900.0) * 900;
   if(MathAbs(diff - offset) > 120 || offset > 86400 || offset < -86400)
      return;   // stale quote: keep what we know
   if(!g_tzKnown || offset != g_tz)
     {
      g_tz = (int)offset;
      g_tzKnown = true;
      g_stateDirty = true;
      TwInfo("broker time is UTC" + (g_tz >= 0 ? "+" : "") + DoubleToString(g_tz / 3600.0, 2) + " h");
     }
  }

long TwNowMs() { return (long)TimeGMT() * 1000; }
long BrokerToUtcMs(const datetime t) { long ms = ((long)t - g_tz) * 1000; return ms < 0 ? 0 : ms; }

//+------------------------------------------------------------------+
//| One chart per account (see the MT5 EA).                          |
//+------------------------------------------------------------------+
double ChartKey(const long chart) { return (double)(chart % 2147483647); }

bool ClaimAccount(const long login)
  {
   g_lockName = "Tradewire." + IntegerToString(login) + ".chart";
   double mine = ChartKey(ChartID());
   if(GlobalVariableCheck(g_lockName))
     {
      double owner = GlobalVariableGet(g_lockName);
      if(owner != mine)
        {
         for(long chart = ChartFirst(); chart >= 0; chart = ChartNext(chart))
           {
            if(chart != ChartID() && ChartKey(chart) == owner)
               return false;
           }
        }
     }
   GlobalVariableTemp(g_lockName);
   GlobalVariableSet(g_lockName, mine);
   return true;
  }

void ReleaseAccount()
  {
   if(g_lockName != "" && GlobalVariableCheck(g_lockName) && GlobalVariableGet(g_lockName) == ChartKey(ChartID()))
      GlobalVariableDel(g_lockName);
  }

//+------------------------------------------------------------------+
//| Known orders, kept in the outbox file                            |
//+------------------------------------------------------------------+
int KnownIndex(const long ticket)
  {
   for(int i = 0; i < ArraySize(g_known); i++)
      if(g_known[i].ticket == ticket)
         return i;
   return -1;
  }

void AddKnown(const TwOrder &o)
  {
   int k = ArraySize(g_known);
   ArrayResize(g_known, k + 1);
   g_known[k] = o;
   g_stateDirty = true;
  }

void RemoveKnown(const int k)
  {
   int n = ArraySize(g_known);
   for(int i = k; i < n - 1; i++)
      g_known[i] = g_known[i + 1];
   ArrayResize(g_known, n - 1);
   g_stateDirty = true;
  }

string Exact(const double v) { return StringFormat("%.17g", v); }

string KnownLine(const TwOrder &o)
  {
   string comment = o.comment;
   StringReplace(comment, "\t", " ");
   StringReplace(comment, "\n", " ");
   StringReplace(comment, "\r", " ");
   return "ord\t" + IntegerToString(o.ticket) + "\t" + o.symbol + "\t" + IntegerToString(o.side) + "\t" + Exact(o.lots)
          + "\t" + Exact(o.openPrice) + "\t" + Exact(o.sl) + "\t" + Exact(o.tp) + "\t" + IntegerToString(o.magic) + "\t"
          + IntegerToString(o.openTimeMs) + "\t" + Exact(o.commission) + "\t" + comment;
  }

bool ParseKnownLine(const string line, TwOrder &o)
  {
   string f[];
   int n = StringSplit(line, '\t', f);
   if(n < 11 || f[0] != "ord")
      return false;
   TwOrderClear(o);
   o.ticket = StringToInteger(f[1]);
   o.symbol = f[2];
   o.side = (int)StringToInteger(f[3]);
   o.lots = StringToDouble(f[4]);
   o.openPrice = StringToDouble(f[5]);
   o.sl = StringToDouble(f[6]);
   o.tp = StringToDouble(f[7]);
   o.magic = StringToInteger(f[8]);
   o.openTimeMs = StringToInteger(f[9]);
   o.commission = StringToDouble(f[10]);
   o.comment = n > 11 ? f[11] : "";
   o.price = o.openPrice;
   return o.ticket > 0 && o.symbol != "";
  }

void SaveState()
  {
   string lines[];
   ArrayResize(lines, ArraySize(g_known) + 1);
   lines[0] = "tz\t" + IntegerToString(g_tz) + "\t" + (g_tzKnown ? "1" : "0");
   for(int i = 0; i < ArraySize(g_known); i++)
      lines[i + 1] = KnownLine(g_known[i]);
   g_outbox.SetExtra(lines);
   if(g_outbox.Save())
     {
      g_stateDirty = false;
      g_saveFailed = false;
      return;
     }
   if(!g_saveFailed)
     {
      g_saveFailed = true;
      TwError(StringFormat("cannot write the outbox file %s (error %d): unacked events would not survive a restart",
                           g_outbox.File(), GetLastError()));
      Alert("TradewireEA: cannot write its outbox file ", g_outbox.File());
     }
  }

//+------------------------------------------------------------------+
//| Protocol messages (field names checked by test_ea_schema.py)     |
//+------------------------------------------------------------------+
void WritePosition(CJsonWriter &w, const TwOrder &o)
  {
   int digits = TwPriceDigits(o.symbol);
   w.BeginObject("Position");
   w.Int("id", o.ticket);
   w.Int("ticket", o.ticket);
   w.Str("symbol", o.symbol);
   w.Str("side", SideName(o.side));
   w.Qty("volume", o.lots, TwVolumeDigits(o.symbol));
   w.Price("openPrice", o.openPrice, digits);
   w.Price("price", o.price, digits);
   w.Price("sl", o.sl, digits);
   w.Price("tp", o.tp, digits);
   w.Money("profit", o.profit);
   w.Money("swap", o.swap);
   w.Money("commission", o.commission);
   w.Int("magic", o.magic);
   w.Str("comment", o.comment);
   w.Int("openTime", o.openTimeMs);
   w.EndObject();
  }

string HelloMessage()
  {
   CJsonWriter w;
   w.BeginMessage("hello");
   w.Str("platform", "MT4");
   w.Int("login", AccountInfoInteger(ACCOUNT_LOGIN));
   w.Str("server", StringSubstr(AccountInfoString(ACCOUNT_SERVER), 0, 128));
   w.Str("broker", StringSubstr(AccountInfoString(ACCOUNT_COMPANY), 0, 128));
   w.Str("currency", StringSubstr(AccountInfoString(ACCOUNT_CURRENCY), 0, 16));
   w.Int("leverage", AccountInfoInteger(ACCOUNT_LEVERAGE));
   w.Key("ea");
   w.BeginObject("EAInfo");
   w.Str("name", TW_EA_NAME);
   w.Str("version", TW_EA_VERSION);
   w.EndObject();
   w.Int("tzOffsetSec", g_tz);
   w.Int("lastSeq", g_outbox.Seq());
   w.EndObject();
   return w.Text();
  }

string AccountMessage()
  {
   double margin = AccountInfoDouble(ACCOUNT_MARGIN);
   CJsonWriter w;
   w.BeginMessage("account");
   w.Int("ts", TwNowMs());
   w.Money("balance", AccountInfoDouble(ACCOUNT_BALANCE));
   w.Money("equity", AccountInfoDouble(ACCOUNT_EQUITY));
   w.Money("margin", margin);
   w.Money("freeMargin", AccountInfoDouble(ACCOUNT_MARGIN_FREE));
   if(margin > 0.0)
      w.Num("marginLevel", AccountInfoDouble(ACCOUNT_MARGIN_LEVEL));
   else
      w.Null("marginLevel");
   w.Num("marginCallLevel", AccountInfoDouble(ACCOUNT_MARGIN_SO_CALL));
   w.Num("stopOutLevel", AccountInfoDouble(ACCOUNT_MARGIN_SO_SO));
   w.Str("marginMode", AccountInfoInteger(ACCOUNT_MARGIN_SO_MODE) == ACCOUNT_STOPOUT_MODE_PERCENT ? "percent" : "money");
   w.EndObject();
   return w.Text();
  }

string PositionsMessage()
  {
   CJsonWriter w;
   w.BeginMessage("positions");
   w.Int("ts", TwNowMs());
   w.BeginArray("positions");
   // Vanished ones too, until their CLOSE is emitted: left out, the hub would record a CLOSE of its own
   // (for good) for an order that may have been hidden a moment, and without its close price.
   for(int i = 0; i < ArraySize(g_known); i++)
      WritePosition(w, g_known[i]);
   w.EndArray();
   w.EndObject();
   return w.Text();
  }

string TicksMessage()
  {
   CJsonWriter w;
   w.BeginMessage("ticks");
   w.BeginArray("ticks");
   int count = 0;
   for(int i = 0; i < ArraySize(g_symbols); i++)
     {
      MqlTick t;
      if(!SymbolInfoTick(g_symbols[i], t) || t.bid <= 0.0 || t.ask <= 0.0)
         continue;
      int digits = TwPriceDigits(g_symbols[i]);
      w.BeginObject("Tick");
      w.Str("symbol", g_symbols[i]);
      w.Price("bid", t.bid, digits);
      w.Price("ask", t.ask, digits);
      w.Int("ts", BrokerToUtcMs(t.time));
      w.EndObject();
      count++;
     }
   w.EndArray();
   w.EndObject();
   return count > 0 ? w.Text() : "";
  }

string PositionEventMessage(const long seq, const string event, const TwOrder &o, const long tsMs, const string reason,
                            const bool withClose, const double closePrice, const double profit)
  {
   CJsonWriter w;
   w.BeginMessage("position");
   w.Int("seq", seq);
   w.Str("id", TwLower(event) + "-" + IntegerToString(o.ticket) + "-" + IntegerToString(seq));
   w.Str("event", event);
   w.Int("ts", tsMs);
   w.Key("position");
   WritePosition(w, o);
   if(withClose)
     {
      w.Price("closePrice", closePrice, TwPriceDigits(o.symbol));
      w.Money("profit", profit);
     }
   if(reason != "")
      w.Str("reason", reason);
   w.EndObject();
   return w.Text();
  }

string ErrorMessage(const long seq, const string code, const string message, const bool critical)
  {
   CJsonWriter w;
   w.BeginMessage("error");
   w.Int("seq", seq);
   w.Str("id", "error-" + IntegerToString(seq));
   w.Str("code", code);
   w.Str("message", StringSubstr(message, 0, 2000));
   w.Int("ts", TwNowMs());
   w.Str("severity", critical ? "CRITICAL" : "HIGH");
   w.EndObject();
   return w.Text();
  }

string BatchBody(const bool withHello, string &messages[])
  {
   CJsonWriter w;
   w.BeginObject("BatchBody");
   if(withHello)
      w.Raw("hello", HelloMessage());
   w.BeginArray("messages");
   for(int i = 0; i < ArraySize(messages); i++)
      w.RawItem(messages[i]);
   w.EndArray();
   w.EndObject();
   return w.Text();
  }

//+------------------------------------------------------------------+
//| Durable events                                                   |
//+------------------------------------------------------------------+
void EmitPositionEvent(const string event, const TwOrder &o, const long tsMs, const string reason, const bool withClose,
                       const double closePrice, const double profit)
  {
   long seq = g_outbox.NextSeq();
   g_outbox.Append(seq, PositionEventMessage(seq, event, o, tsMs, reason, withClose, closePrice, profit));
   SaveState();
   string detail = withClose ? " at " + TwJsonNumber(closePrice, TwPriceDigits(o.symbol)) + ", profit "
                   + TwJsonNumber(profit, g_twMoneyDigits) : "";
   TwInfo(event + " order " + IntegerToString(o.ticket) + " " + o.symbol + " " + SideName(o.side) + " "
          + TwJsonNumber(o.lots, TwVolumeDigits(o.symbol)) + detail + (reason != "" ? " (" + reason + ")" : "")
          + " seq " + IntegerToString(seq) + (IsSystemMagic(o.magic) ? " [system]" : ""));
   if(withClose && reason == "stopout" && IsSystemMagic(o.magic))
      TwWarn("system trade " + IntegerToString(o.ticket) + " was closed by a stop-out");
  }

void EmitError(const string code, const string message, const bool critical)
  {
   long seq = g_outbox.NextSeq();
   g_outbox.Append(seq, ErrorMessage(seq, code, message, critical));
   SaveState();
   TwWarn("reported to the hub: " + code + ": " + message);
  }

//+------------------------------------------------------------------+
//| The diff: open market orders by ticket, every timer tick.        |
//+------------------------------------------------------------------+
void ReadSelectedOrder(TwOrder &o)
  {
   TwOrderClear(o);
   o.ticket = OrderTicket();
   o.symbol = OrderSymbol();
   o.side = OrderType() == OP_BUY ? 0 : 1;
   o.lots = OrderLots();
   o.openPrice = OrderOpenPrice();
   o.sl = OrderStopLoss();
   o.tp = OrderTakeProfit();
   o.price = OrderClosePrice();   // for an open order: the current close price
   o.profit = OrderProfit();
   o.swap = OrderSwap();
   o.commission = OrderCommission();
   o.magic = OrderMagicNumber();
   o.comment = StringSubstr(OrderComment(), 0, 256);
   o.openTimeMs = BrokerToUtcMs(OrderOpenTime());
  }

bool Changed(const TwOrder &a, const TwOrder &b)
  {
   return a.side != b.side || !TwSame(a.lots, b.lots) || !TwSame(a.openPrice, b.openPrice) || !TwSame(a.sl, b.sl)
          || !TwSame(a.tp, b.tp);
  }

// MT4 closes part of an order by closing it and opening the rest under a new ticket whose
// comment reads "from #<old ticket>".
bool HasRemainder(const long ticket)
  {
   string mark = "from #" + IntegerToString(ticket);
   for(int i = OrdersTotal() - 1; i >= 0; i--)
      if(OrderSelect(i, SELECT_BY_POS, MODE_TRADES) && StringFind(OrderComment(), mark) >= 0)
         return true;
   return false;
  }

void CloseKnown(const int k)
  {
   TwOrder o;
   o = g_known[k];
   bool found = OrderSelect((int)o.ticket, SELECT_BY_TICKET, MODE_HISTORY) && OrderCloseTime() > 0;
   double closePrice = 0.0, profit = 0.0;
   string reason = "";
   long ts = TwNowMs();
   if(found)
     {
      closePrice = OrderClosePrice();
      profit = OrderProfit();
      o.lots = OrderLots();
      o.price = closePrice;
      o.profit = profit;
      o.swap = OrderSwap();
      o.commission = OrderCommission();
      ts = BrokerToUtcMs(OrderCloseTime());
      string comment = TwLower(OrderComment());
      if(StringFind(comment, "[sl]") >= 0)
         reason = "sl";
      else if(StringFind(comment, "[tp]") >= 0)
         reason = "tp";
      else if(TwStartsWith(comment, "so:") || StringFind(comment, "stop out") >= 0)
         reason = "stopout";
      else
         reason = HasRemainder(o.ticket) ? "partial" : "client";
     }
   else
     {
      // Not in the history (yet): the Account History tab may be filtered to a short period.
      if(g_known[k].goneSince == 0)
        {
         g_known[k].goneSince = GetTickCount();
         if(g_known[k].goneSince == 0)
            g_known[k].goneSince = 1;
         return;
        }
      if(TwElapsed(g_known[k].goneSince) < TW_CLOSE_GRACE_MS)
         return;
      EmitError("close_details_missing", "order " + IntegerToString(o.ticket) + " " + o.symbol
                + " closed but is not in the history pool (set Account History to All History): CLOSE sent without price and profit",
                false);
     }
   RemoveKnown(k);
   EmitPositionEvent("CLOSE", o, ts, reason, found, closePrice, profit);
  }

void ScanOrders()
  {
   if(!IsConnected())
      return;   // a terminal without its trade server may list nothing: that is not "all closed"
   long seen[];
   for(int i = OrdersTotal() - 1; i >= 0; i--)
     {
      if(!OrderSelect(i, SELECT_BY_POS, MODE_TRADES))
         continue;
      int type = OrderType();
      if(type != OP_BUY && type != OP_SELL)
         continue;   // pending orders are not positions
      TwOrder o;
      ReadSelectedOrder(o);
      int s = ArraySize(seen);
      ArrayResize(seen, s + 1);
      seen[s] = o.ticket;
      int k = KnownIndex(o.ticket);
      if(k < 0)
        {
         AddKnown(o);
         EmitPositionEvent("OPEN", o, o.openTimeMs > 0 ? o.openTimeMs : TwNowMs(), "", false, 0.0, 0.0);
        }
      else if(Changed(g_known[k], o))
        {
         string reason = o.lots < g_known[k].lots - 1e-10 ? "partial" : "";
         g_known[k] = o;
         g_stateDirty = true;
         EmitPositionEvent("MODIFY", o, TwNowMs(), reason, false, 0.0, 0.0);
        }
      else
        {
         g_known[k].price = o.price;
         g_known[k].profit = o.profit;
         g_known[k].swap = o.swap;
         g_known[k].commission = o.commission;
         g_known[k].goneSince = 0;
        }
     }
   for(int k = ArraySize(g_known) - 1; k >= 0; k--)
     {
      bool isOpen = false;
      for(int s = 0; s < ArraySize(seen) && !isOpen; s++)
         isOpen = seen[s] == g_known[k].ticket;
      if(!isOpen)
         CloseKnown(k);
     }
   g_scanned = true;
  }

//+------------------------------------------------------------------+
//| HTTP                                                             |
//+------------------------------------------------------------------+
// https://host[:port][/prefix] (ws:// and wss:// are accepted too) -> .../ea/v1/batch
string BatchUrl(const string url)
  {
   string s = TwTrim(url);
   string lower = TwLower(s);
   if(TwStartsWith(lower, "wss://"))
      s = "https://" + StringSubstr(s, 6);
   else if(TwStartsWith(lower, "ws://"))
      s = "http://" + StringSubstr(s, 5);
   else if(!TwStartsWith(lower, "https://") && !TwStartsWith(lower, "http://"))
      return "";
   while(TwEndsWith(s, "/"))
      s = StringSubstr(s, 0, StringLen(s) - 1);
   if(TwEndsWith(s, "/ea/v1/batch"))
      return s;
   if(TwEndsWith(s, "/ea/v1"))
      return s + "/batch";
   return s + "/ea/v1/batch";
  }

// POST a body; the HTTP status (or -1) and the answer's text.
int Post(const string body, string &answer)
  {
   char data[];
   char result[];
   string headers = "Content-Type: application/json\r\nAuthorization: Bearer " + InpToken + "\r\n";
   string resultHeaders = "";
   TwUtf8(body, data);
   TwDebug("POST " + g_batchUrl + " " + body);
   ResetLastError();
   g_lastPost = GetTickCount();
   int status = WebRequest("POST", g_batchUrl, headers, TW_HTTP_TIMEOUT, data, result, resultHeaders);
   g_webError = status == -1 ? GetLastError() : 0;   // read at once: later calls may reset it
   answer = ArraySize(result) > 0 ? CharArrayToString(result, 0, ArraySize(result), CP_UTF8) : "";
   if(status != -1)
      TwDebug("HTTP " + IntegerToString(status) + " " + answer);
   return status;
  }

void Backoff(const int status, const string answer)
  {
   g_failures++;
   g_needWelcome = true;
   g_needHello = true;
   double ceiling = MathMin(60.0, MathPow(2.0, MathMin(g_failures - 1, 6)));   // 1, 2, 4 ... 60 s
   if(status == -1)
     {
      int err = g_webError;
      if(err == 4014 || err == 4060)
        {
         TwError("WebRequest is not allowed for " + g_batchUrl + " (error " + IntegerToString(err) + "): add "
                 + InpServerUrl + " in Tools > Options > Expert Advisors > Allow WebRequest for listed URL");
         ceiling = MathMax(ceiling, 30.0);
        }
      else if(err == 5200)
         TwError("WebRequest: invalid URL " + g_batchUrl + " (5200)");
      else if(err == 5201)
         TwWarn("WebRequest: cannot connect to the hub (5201)");
      else if(err == 5202)
         TwWarn("WebRequest: the hub did not answer in time (5202)");
      else
         TwWarn("WebRequest failed (error " + IntegerToString(err) + ")");
     }
   else if(status == 401)
     {
      TwError("the hub refused the token (HTTP 401). Issue one with `tradewire token issue --account ID` and set it "
              + "in the EA's InpToken input");
      ceiling = 300.0;
     }
   else if(status == 413)
     {
      g_maxMessages = g_maxMessages > 10 ? g_maxMessages / 2 : 10;
      TwWarn("the hub found the batch too large (413): sending at most " + IntegerToString(g_maxMessages) + " messages");
      ceiling = 1.0;
     }
   else if(status == 503)
      TwWarn("the hub is unavailable (503: " + StringSubstr(answer, 0, 200) + ")");
   else
      TwWarn("the hub answered HTTP " + IntegerToString(status) + ": " + StringSubstr(answer, 0, 300));
   double delay = ceiling / 2.0 + (MathRand() / 32768.0) * ceiling / 2.0;   // jittered
   g_retryAt = GetTickCount() + (uint)(delay * 1000.0);
   g_waiting = true;
   TwInfo(StringFormat("retrying in %.1f s", delay));
  }

// A 200 answer: the hub has committed everything it acks.
// Messages the hub refused as malformed (each error names its id in `ref`) leave the outbox: resent, they
// would be refused again, riding along in every POST until a later ack happened to cover them.
int DropRefusedForGood(const string errors)
  {
   string codes[3] = {"invalid_message", "unknown_type", "wrong_account"};
   int dropped = 0;
   for(int c = 0; c < 3; c++)
     {
      string needle = "\"code\":\"" + codes[c] + "\"";
      for(int at = StringFind(errors, needle); at >= 0; at = StringFind(errors, needle, at + 1))
        {
         // Its own `ref` comes after its code (code, message, ref, index), before the next error's code.
         int refAt = StringFind(errors, "\"ref\":\"", at);
         int nextAt = StringFind(errors, "\"code\":", at + 1);
         if(refAt < 0 || (nextAt >= 0 && nextAt < refAt))
            continue;
         string ref = TwJsonRaw(StringSubstr(errors, refAt), "ref");
         int n = ref != "" ? g_outbox.Refuse(ref) : 0;
         if(n > 0)
            TwError("hub refused " + ref + " for good (" + codes[c] + "), dropped from the outbox");
         dropped += n;
        }
     }
   return dropped;
  }

void ApplyAnswer(const string answer, const bool welcome)
  {
   long acked = TwJsonLong(answer, "ackedSeq", -1);
   long hb = TwJsonLong(answer, "heartbeatSec", 0);
   if(hb > 0 && hb < InpHeartbeatSec)
      g_heartbeatSec = (int)hb;
   if(acked >= 0)
     {
      if(welcome)
        {
         int before = g_outbox.Count();
         bool renumbered = g_outbox.OnWelcome(acked);
         TwInfo("connected to " + g_batchUrl + ": ackedSeq " + IntegerToString(acked) + ", "
                + IntegerToString(before - g_outbox.Count()) + " acked while away, sending "
                + IntegerToString(g_outbox.Count()) + (renumbered ? " (renumbered above the hub's seq)" : ""));
        }
      else if(g_outbox.Ack(acked) > 0)
         TwDebug("acked up to " + IntegerToString(acked));
      SaveState();
     }
   string errors = TwJsonRaw(answer, "errors");
   if(errors != "" && errors != "[]")
     {
      TwWarn("hub refused: " + StringSubstr(errors, 0, 500));
      if(StringFind(errors, "hello_required") >= 0)
         g_needHello = true;
      if(DropRefusedForGood(errors) > 0)
         SaveState();
     }
   if(g_failures > 0 && welcome)
      TwInfo("hub reachable again");
   g_failures = 0;
   g_waiting = false;
   g_lastOk = GetTickCount();
  }

void PostCycle()
  {
   string answer = "";
   if(g_needWelcome)
     {
      // hello alone first: the answer's ackedSeq tells what the hub already holds, before any
      // durable message is sent (a fresh outbox renumbers above it).
      string none[];
      int status = Post(BatchBody(true, none), answer);
      if(status != 200)
        {
         Backoff(status, answer);
         return;
        }
      ApplyAnswer(answer, true);
      g_needWelcome = false;
      g_needHello = false;
      g_lastSnapshot = 0;
     }
   string items[];
   int bytes = 0;
   for(int i = 0; i < g_outbox.Count() && ArraySize(items) < g_maxMessages && bytes < TW_MAX_BODY_BYTES; i++)
     {
      TwPush(items, g_outbox.MessageAt(i));   // every unacked one rides along: an answer acks them all
      bytes += StringLen(g_outbox.MessageAt(i));
     }
   // Only with the whole outbox in this POST: sent ahead of a backlog's later POSTs, a snapshot without a
   // position has the hub record its CLOSE, and the position's MODIFYs still to come are not stored.
   bool whole = ArraySize(items) == g_outbox.Count();
   TwPush(items, AccountMessage());
   TwPush(items, TicksMessage());
   // Not before a scan has read the terminal connected: a fresh outbox knows no orders yet, and an empty
   // snapshot would have the hub record a CLOSE for every position it knew open.
   if(whole && g_scanned && (g_lastSnapshot == 0 || TwElapsed(g_lastSnapshot) >= (uint)(InpSnapshotSec > 1 ? InpSnapshotSec : 1) * 1000))
     {
      TwPush(items, PositionsMessage());
      g_lastSnapshot = GetTickCount();
     }
   // The hub forgets an HTTP session after 3 quiet heartbeats: say hello again well before.
   bool hello = g_needHello || TwElapsed(g_lastOk) >= (uint)g_heartbeatSec * 1000;
   int status = Post(BatchBody(hello, items), answer);
   if(status != 200)
     {
      Backoff(status, answer);
      return;
     }
   if(hello)
      g_needHello = false;
   ApplyAnswer(answer, false);
  }

//+------------------------------------------------------------------+
//| Start-up                                                         |
//+------------------------------------------------------------------+
bool EnsureReady()
  {
   if(g_ready)
      return true;
   long login = AccountInfoInteger(ACCOUNT_LOGIN);
   if(login == 0)
      return false;
   static bool s_warnedBusy = false;
   if(!ClaimAccount(login))
     {
      if(!s_warnedBusy)
         TwError("TradewireEA already streams account " + IntegerToString(login)
                 + " from another chart: attach it to one chart per account. This copy stays idle.");
      s_warnedBusy = true;
      return false;
     }
   string file = "Tradewire\\" + IntegerToString(login) + ".outbox";
   if(!g_outbox.Open(file, InpCommonFolder))
     {
      TwError(StringFormat("cannot read the outbox file %s (error %d)", file, GetLastError()));
      return false;
     }
   string lines[];
   ArrayResize(g_known, 0);
   int n = g_outbox.Extra(lines);
   for(int i = 0; i < n; i++)
     {
      string f[];
      if(TwStartsWith(lines[i], "tz\t") && StringSplit(lines[i], '\t', f) >= 3)
        {
         g_tz = (int)StringToInteger(f[1]);
         g_tzKnown = f[2] == "1";
         continue;
        }
      TwOrder o;
      if(ParseKnownLine(lines[i], o))
         AddKnown(o);
     }
   UpdateBrokerOffset();
   g_ready = true;
   SaveState();
   TwInfo(TW_EA_NAME + " " + TW_EA_VERSION + " for account " + IntegerToString(login) + " on "
          + AccountInfoString(ACCOUNT_SERVER) + ": posting to " + g_batchUrl + ", outbox " + file + " (seq "
          + IntegerToString(g_outbox.Seq()) + ", " + IntegerToString(g_outbox.Count()) + " unacked, "
          + IntegerToString(ArraySize(g_known)) + " known orders)");
   return true;
  }

//+------------------------------------------------------------------+
//| Event handlers                                                   |
//+------------------------------------------------------------------+
int OnInit()
  {
   // Globals survive a re-initialisation (chart or input change): start from a clean state.
   g_ready = false;
   g_failures = 0;
   g_waiting = false;
   g_needHello = true;
   g_stateDirty = false;
   g_maxMessages = 200;
   g_scanned = false;        // no snapshot before this account's first connected scan
   g_lastServerTime = 0;     // the broker offset is read afresh (or from this account's file)
   g_lastServerTick = 0;
   g_tz = 0;
   g_tzKnown = false;
   g_lastSnapshot = 0;
   ArrayResize(g_known, 0);
   ArrayResize(g_symbols, 0);
   g_twLogLevel = InpLogLevel;
   MathSrand((uint)(GetTickCount() ^ (uint)GetMicrosecondCount() ^ (uint)TimeLocal()));
   if(TwTrim(InpToken) == "")
     {
      Alert("TradewireEA: set the InpToken input (issue one on the hub: tradewire token issue --account ID)");
      return INIT_PARAMETERS_INCORRECT;
     }
   g_batchUrl = BatchUrl(InpServerUrl);
   if(g_batchUrl == "")
     {
      Alert("TradewireEA: InpServerUrl must start with https:// (or http:// on a LAN): ", InpServerUrl);
      return INIT_PARAMETERS_INCORRECT;
     }
   if(IsTesting())
      TwWarn("running in the Strategy Tester: WebRequest does not work there, nothing will be streamed");
   if(TwSplitList(InpSymbols, g_symbols) == 0)
      TwPush(g_symbols, Symbol());
   for(int i = 0; i < ArraySize(g_symbols); i++)
      if(!SymbolSelect(g_symbols[i], true))
         TwWarn("symbol " + g_symbols[i] + " is not offered by this broker: no ticks for it");
   string magics[];
   int magicCount = TwSplitList(InpSystemMagics, magics);
   ArrayResize(g_systemMagics, magicCount);
   for(int i = 0; i < magicCount; i++)
      g_systemMagics[i] = StringToInteger(magics[i]);
   g_heartbeatSec = InpHeartbeatSec > 0 ? InpHeartbeatSec : 10;
   g_needWelcome = true;
   EnsureReady();
   if(!EventSetMillisecondTimer(TW_TIMER_MS))
     {
      TwError(StringFormat("cannot start the timer (error %d)", GetLastError()));
      return INIT_FAILED;
     }
   return INIT_SUCCEEDED;
  }

void OnDeinit(const int reason)
  {
   EventKillTimer();
   if(g_ready)
      SaveState();
   ReleaseAccount();
   TwInfo("stopped (deinit reason " + IntegerToString(reason) + "), " + IntegerToString(g_outbox.Count())
          + " unacked message(s) kept for the next start");
  }

void OnTimer()
  {
   if(!EnsureReady())
      return;
   UpdateBrokerOffset();
   int before = g_outbox.Count();
   static bool warnedTz = false;
   if(g_tzKnown)
      ScanOrders();   // not before: an OPEN's time is turned into UTC with the offset, for good
   else if(!warnedTz)
     {
      warnedTz = true;
      TwWarn("broker time offset not known yet (no quote seen moving): trade events wait for one");
     }
   if(g_stateDirty)
      SaveState();
   if(g_waiting && (int)(g_retryAt - GetTickCount()) > 0)
      return;   // backing off: events wait in the outbox
   bool fresh = g_outbox.Count() > before;   // new trade events go out at once
   // At least once per hub heartbeat: past 3 quiet heartbeats the hub raises CONNECTION_LOST.
   int interval = InpPostIntervalSec > 0 ? InpPostIntervalSec : 1;
   if(g_heartbeatSec > 0 && interval > g_heartbeatSec)
      interval = g_heartbeatSec;
   uint every = (uint)interval * 1000;
   if(!g_waiting && !fresh && TwElapsed(g_lastPost) < every)
      return;
   PostCycle();
  }
//+------------------------------------------------------------------+
