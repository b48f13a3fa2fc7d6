//+------------------------------------------------------------------+
//| Tradewire/Util.mqh                                               |
//| Logging, a random source, clocks and small string helpers for    |
//| TradewireEA (MT5). No DLL: only MQL5 built-in functions.         |
//+------------------------------------------------------------------+
#ifndef TRADEWIRE_UTIL_MQH
#define TRADEWIRE_UTIL_MQH

#define TW_EA_NAME    "TradewireEA"
#define TW_EA_VERSION "1.0.0"

//--- log levels (an input of the EA picks one)
enum ENUM_TW_LOG_LEVEL
  {
   TW_LOG_ERROR = 0,   // errors only
   TW_LOG_WARN  = 1,   // + warnings
   TW_LOG_INFO  = 2,   // + connections and trade events
   TW_LOG_DEBUG = 3    // + every frame
  };

int g_twLogLevel = TW_LOG_INFO;

void TwLog(const int level, const string text)
  {
   if(level > g_twLogLevel)
      return;
   string tag = (level == TW_LOG_ERROR ? "ERROR" : level == TW_LOG_WARN ? "WARN" : level == TW_LOG_INFO ? "INFO" : "DEBUG");
   Print(tag, " ", text);   // the terminal prefixes the EA name and the chart
  }
void TwError(const string text) { TwLog(TW_LOG_ERROR, text); }
void TwWarn(const string text)  { TwLog(TW_LOG_WARN, text); }
void TwInfo(const string text)  { TwLog(TW_LOG_INFO, text); }
void TwDebug(const string text) { TwLog(TW_LOG_DEBUG, text); }

//+------------------------------------------------------------------+
//| Random bytes.                                                    |
//| MathRand() gives only 15 bits from a seedable generator, too      |
//| predictable for WebSocket masking keys and Sec-WebSocket-Key. We  |
//| keep a 32-byte pool and stir it with SHA-256 over the pool, a     |
//| counter, the microsecond and millisecond clocks, local time and   |
//| four MathRand() draws, on every request.                          |
//+------------------------------------------------------------------+
uchar g_twRandPool[];
ulong g_twRandCounter = 0;

void TwAppendULong(uchar &buf[], const ulong value)
  {
   int n = ArraySize(buf);
   ArrayResize(buf, n + 8);
   for(int i = 0; i < 8; i++)
      buf[n + i] = (uchar)((value >> (8 * i)) & 0xFF);
  }

void TwRandomStir()
  {
   uchar seed[];
   ArrayCopy(seed, g_twRandPool);
   g_twRandCounter++;
   TwAppendULong(seed, g_twRandCounter);
   TwAppendULong(seed, GetMicrosecondCount());
   TwAppendULong(seed, GetTickCount64());
   TwAppendULong(seed, (ulong)TimeLocal());
   TwAppendULong(seed, ((ulong)MathRand() << 45) ^ ((ulong)MathRand() << 30) ^ ((ulong)MathRand() << 15) ^ (ulong)MathRand());
   uchar key[];
   uchar digest[];
   if(CryptEncode(CRYPT_HASH_SHA256, seed, key, digest) == 32)
      ArrayCopy(g_twRandPool, digest);
   else
     {
      // Should never happen; degrade to the mixed clocks rather than stop.
      ArrayResize(g_twRandPool, 32);
      for(int i = 0; i < 32; i++)
         g_twRandPool[i] = (uchar)(seed[(i * 7) % ArraySize(seed)] ^ (uchar)MathRand() ^ (uchar)(GetMicrosecondCount() >> (i % 8)));
     }
  }

void TwRandomInit()
  {
   MathSrand((uint)(GetTickCount() ^ (uint)GetMicrosecondCount() ^ (uint)TimeLocal() ^ (uint)ChartID()));
   ArrayResize(g_twRandPool, 32);
   ArrayInitialize(g_twRandPool, 0);
   TwRandomStir();
   TwRandomStir();
  }

void TwRandomBytes(uchar &out[], const int count)
  {
   ArrayResize(out, count);
   int filled = 0;
   while(filled < count)
     {
      TwRandomStir();
      // Hand out half of each digest only: the other half never leaves the pool.
      for(int i = 0; i < 16 && filled < count; i++)
         out[filled++] = g_twRandPool[i];
     }
  }

// Uniform in [0, 1).
double TwRandomUnit()
  {
   uchar b[];
   TwRandomBytes(b, 4);
   uint v = (uint)b[0] | ((uint)b[1] << 8) | ((uint)b[2] << 16) | ((uint)b[3] << 24);
   return v / 4294967296.0;
  }

//+------------------------------------------------------------------+
//| Clocks                                                           |
//+------------------------------------------------------------------+
// Broker server time minus UTC, in whole quarter hours. TimeTradeServer() keeps running while the
// market is closed (TimeCurrent() stops at the last quote), so the offset is right at weekends too.
int TwBrokerOffsetSec()
  {
   long diff = (long)TimeTradeServer() - (long)TimeGMT();
   long offset = (long)MathRound(diff / 900.0) * 900;
   if(offset > 86400 || offset < -86400)
      offset = 0;
   return (int)offset;
  }

// Milliseconds since the epoch, UTC (the PC clock: keep it synchronised).
long TwNowMs()
  {
   return (long)TimeGMT() * 1000;
  }

// A broker-time millisecond stamp (POSITION_TIME_MSC, DEAL_TIME_MSC, MqlTick.time_msc) as UTC ms.
long TwBrokerMsToUtc(const long brokerMs, const int offsetSec)
  {
   long ms = brokerMs - (long)offsetSec * 1000;
   return ms < 0 ? 0 : ms;
  }

//+------------------------------------------------------------------+
//| Strings                                                          |
//+------------------------------------------------------------------+
string TwTrim(const string s)
  {
   string t = s;
   StringTrimLeft(t);
   StringTrimRight(t);
   return t;
  }

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
int TwUtf8(const string text, uchar &out[])
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

// How many bytes the text takes as UTF-8 (what a frame's size is counted in).
int TwUtf8Len(const string text)
  {
   uchar bytes[];
   return TwUtf8(text, bytes);
  }

// Comma-separated list -> trimmed, non-empty items.
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

//+------------------------------------------------------------------+
//| Reading the hub's replies. They are small flat JSON objects      |
//| encoded by the hub without spaces ({"type":"ack","seq":42}), so  |
//| a field lookup is enough; no general JSON parser is needed.      |
//+------------------------------------------------------------------+
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
      string out = "";
      for(int j = i + 1; j < n; j++)
        {
         ushort c = StringGetCharacter(json, j);
         if(c == '\\' && j + 1 < n)
           {
            ushort e = StringGetCharacter(json, ++j);
            out += (e == 'n' ? "\n" : e == 't' ? "\t" : e == 'r' ? "\r" : ShortToString(e));
            continue;
           }
         if(c == '"')
            return out;
         out += ShortToString(c);
        }
      return out;
     }
   int end = i;
   while(end < n)
     {
      ushort c = StringGetCharacter(json, end);
      if(c == ',' || c == '}' || c == ']')
         break;
      end++;
     }
   return TwTrim(StringSubstr(json, i, end - i));
  }

long TwJsonLong(const string json, const string name, const long fallback)
  {
   string raw = TwJsonRaw(json, name);
   if(raw == "" || raw == "null")
      return fallback;
   return StringToInteger(raw);
  }

#endif
