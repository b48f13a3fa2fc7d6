//+------------------------------------------------------------------+
//| TradewireEA.mq5                                                  |
//| Streams one MT5 account to a tradewire hub: EA protocol v1 over  |
//| a WebSocket made of MQL5's native sockets (no DLL).              |
//|                                                                  |
//| Attach to ONE chart per account. Needs the hub's address in      |
//| Tools > Options > Expert Advisors > "Allow WebRequest for listed |
//| URL" (the list also governs sockets).                            |
//|                                                                  |
//| What it sends                                                    |
//|  - hello after every connect (broker time offset, last seq);     |
//|  - durable `position` events (OPEN / MODIFY / CLOSE, keyed by    |
//|    POSITION_IDENTIFIER) from OnTradeTransaction, with OnTimer    |
//|    diffing the open positions as a safety net; kept in the       |
//|    outbox file until the hub acks them, resent after `welcome`;  |
//|  - durable `error` messages for EA-side failures;                |
//|  - from OnTimer: account state, ticks, the full position set and |
//|    heartbeats; a full snapshot after every (re)connect.          |
//+------------------------------------------------------------------+
#property copyright   "tradewire"
#property version     "1.00"
#property description "Streams this account to a tradewire hub (EA protocol v1, WebSocket)."
#property description "Allow the hub's URL in Tools > Options > Expert Advisors; one chart per account."

#include <Tradewire\Util.mqh>
#include <Tradewire\Json.mqh>
#include <Tradewire\WebSocket.mqh>
#include <Tradewire\Outbox.mqh>

//--- inputs
input string            InpServerUrl      = "wss://hub.example.com"; // Hub URL: wss://host[:port] (ws:// only on a LAN)
input string            InpToken          = "";                      // EA token: tradewire token issue --account ID
input string            InpSymbols        = "";                      // Ticks for these symbols, comma-separated ("" = this chart's)
input int               InpHeartbeatSec   = 10;                      // Heartbeat seconds (the hub may ask for less)
input string            InpSystemMagics   = "";                      // System magic numbers, comma-separated (tagged in the log)
input ENUM_TW_LOG_LEVEL InpLogLevel       = TW_LOG_INFO;             // Log level
input int               InpSendIntervalMs = 1000;                    // Account state and ticks every N ms
input int               InpSnapshotSec    = 5;                       // Full position set every N seconds
input bool              InpCommonFolder   = false;                   // Outbox file in the terminals' common Files folder

#define TW_TIMER_MS          250
#define TW_CONNECT_TIMEOUT   5000
#define TW_WELCOME_TIMEOUT   10000
#define TW_CLOSE_GRACE_MS    30000   // a vanished position waits this long for its exit deal
#define TW_MAX_BATCH         100     // durable messages per frame
#define TW_MAX_FRAME_BYTES   262144  // well under the hub's 1 MiB frame limit
#define TW_API_GATEWAY_FRAME_BYTES 32512  // API Gateway (the AWS deployment) closes 1009 past 32 KB a frame
#define TW_ACK_TIMEOUT       30000   // a durable frame unanswered this long: reconnect (the welcome settles it)
#define TW_SETTLE_MS         5000    // after the trade server link returns, its lists are still loading

//--- a position as last reported to the hub
struct TwPos
  {
   ulong             id;           // POSITION_IDENTIFIER: stable for the position's life
   ulong             ticket;       // POSITION_TICKET: can change (service operations)
   string            symbol;
   int               side;         // 0 buy, 1 sell
   double            volume;
   double            openPrice;
   double            sl;
   double            tp;
   double            price;
   double            profit;
   double            swap;
   double            commission;   // from the position's deals (positions carry none)
   long              magic;
   string            comment;
   long              openTimeMs;   // UTC
   long              updateTimeMs; // UTC, last change
   ulong             goneSinceMs;  // GetTickCount64() when first seen missing, 0 while open
  };

//--- close details from the history
struct TwClose
  {
   double            price;
   double            profit;
   string            reason;
   long              tsMs;
   double            commission;
   double            swap;
  };

CTwWebSocket g_ws;
CTwOutbox    g_outbox;
TwPos        g_known[];
string       g_symbols[];
long         g_systemMagics[];
bool         g_ready = false;          // account known, outbox loaded
long         g_login = 0;
int          g_tz = 0;                 // broker time - UTC, seconds
bool         g_helloSent = false;
bool         g_welcomed = false;
long         g_sentSeq = 0;            // highest durable seq sent on this connection
int          g_maxFrameBytes = TW_MAX_FRAME_BYTES;  // TW_API_GATEWAY_FRAME_BYTES for an API Gateway URL
bool         g_tooBigSaid = false;     // a message over the frame limit was left out (said once)
ulong        g_durableSentMs = 0;      // GetTickCount64() when the last durable frame went out
int          g_failures = 0;
ulong        g_nextAttemptMs = 0;
ulong        g_helloAtMs = 0;
ulong        g_lastVolatileMs = 0;
ulong        g_lastSnapshotMs = 0;
ulong        g_lastHeartbeatMs = 0;
ulong        g_connectedAtMs = 0;      // GetTickCount64() when the link to the trade server was seen up (0: down)
int          g_heartbeatSec = 10;
bool         g_stateDirty = false;
bool         g_saveFailed = false;
string       g_lockName = "";

//+------------------------------------------------------------------+
//| Small helpers                                                    |
//+------------------------------------------------------------------+
void TwPosClear(TwPos &p)
  {
   p.id = 0;
   p.ticket = 0;
   p.symbol = "";
   p.side = 0;
   p.volume = 0.0;
   p.openPrice = 0.0;
   p.sl = 0.0;
   p.tp = 0.0;
   p.price = 0.0;
   p.profit = 0.0;
   p.swap = 0.0;
   p.commission = 0.0;
   p.magic = 0;
   p.comment = "";
   p.openTimeMs = 0;
   p.updateTimeMs = 0;
   p.goneSinceMs = 0;
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

void TwPush(string &items[], const string item)
  {
   if(item == "")
      return;
   int k = ArraySize(items);
   ArrayResize(items, k + 1);
   items[k] = item;
  }

string DealReasonName(const long reason)
  {
   switch((int)reason)
     {
      case DEAL_REASON_CLIENT:   return "client";
      case DEAL_REASON_MOBILE:   return "mobile";
      case DEAL_REASON_WEB:      return "web";
      case DEAL_REASON_EXPERT:   return "expert";
      case DEAL_REASON_SL:       return "sl";
      case DEAL_REASON_TP:       return "tp";
      case DEAL_REASON_SO:       return "stopout";
      case DEAL_REASON_ROLLOVER: return "rollover";
      case DEAL_REASON_VMARGIN:  return "vmargin";
      case DEAL_REASON_SPLIT:    return "split";
     }
   return "other";
  }

bool IsExitEntry(const long entry)
  {
   return entry == DEAL_ENTRY_OUT || entry == DEAL_ENTRY_INOUT || entry == DEAL_ENTRY_OUT_BY;
  }

//+------------------------------------------------------------------+
//| One chart per account: two EAs on one account would share (and  |
//| corrupt) the outbox file and keep replacing each other's session.|
//| A temporary global variable holds the owning chart.              |
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
               return false;   // that chart is still open
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
//| Known positions, persisted with the outbox so that a restart     |
//| diffs against what the hub was told (closes while the terminal   |
//| was off become CLOSE events with their deal details).            |
//+------------------------------------------------------------------+
int KnownIndex(const ulong id)
  {
   for(int i = 0; i < ArraySize(g_known); i++)
      if(g_known[i].id == id)
         return i;
   return -1;
  }

void AddKnown(const TwPos &p)
  {
   int k = ArraySize(g_known);
   ArrayResize(g_known, k + 1);
   g_known[k] = p;
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

string KnownLine(const TwPos &p)
  {
   string comment = p.comment;
   StringReplace(comment, "\t", " ");
   StringReplace(comment, "\n", " ");
   StringReplace(comment, "\r", " ");
   return "pos\t" + IntegerToString((long)p.id) + "\t" + IntegerToString((long)p.ticket) + "\t" + p.symbol + "\t"
          + IntegerToString(p.side) + "\t" + Exact(p.volume) + "\t" + Exact(p.openPrice) + "\t" + Exact(p.sl) + "\t"
          + Exact(p.tp) + "\t" + IntegerToString(p.magic) + "\t" + IntegerToString(p.openTimeMs) + "\t"
          + Exact(p.commission) + "\t" + comment;
  }

bool ParseKnownLine(const string line, TwPos &p)
  {
   string f[];
   int n = StringSplit(line, '\t', f);
   if(n < 12 || f[0] != "pos")
      return false;
   TwPosClear(p);
   p.id = (ulong)StringToInteger(f[1]);
   p.ticket = (ulong)StringToInteger(f[2]);
   p.symbol = f[3];
   p.side = (int)StringToInteger(f[4]);
   p.volume = StringToDouble(f[5]);
   p.openPrice = StringToDouble(f[6]);
   p.sl = StringToDouble(f[7]);
   p.tp = StringToDouble(f[8]);
   p.magic = StringToInteger(f[9]);
   p.openTimeMs = StringToInteger(f[10]);
   p.commission = StringToDouble(f[11]);
   p.comment = n > 12 ? f[12] : "";
   p.price = p.openPrice;
   return p.id > 0 && p.symbol != "";
  }

void SaveState()
  {
   string lines[];
   ArrayResize(lines, ArraySize(g_known));
   for(int i = 0; i < ArraySize(g_known); i++)
      lines[i] = KnownLine(g_known[i]);
   g_outbox.SetExtra(lines);
   if(g_outbox.Save())
     {
      g_stateDirty = false;
      g_saveFailed = false;
      return;
     }
   if(!g_saveFailed)   // once: every later event retries the write anyway
     {
      g_saveFailed = true;
      TwError(StringFormat("cannot write the outbox file %s (error %d): unacked events would not survive a restart",
                           g_outbox.File(), GetLastError()));
      Alert("TradewireEA: cannot write its outbox file ", g_outbox.File());
     }
  }

//+------------------------------------------------------------------+
//| Reading the terminal                                             |
//+------------------------------------------------------------------+
// The currently selected position (PositionGetTicket / PositionSelectByTicket) as a TwPos.
void ReadSelectedPosition(TwPos &p)
  {
   TwPosClear(p);
   p.id = (ulong)PositionGetInteger(POSITION_IDENTIFIER);
   p.ticket = (ulong)PositionGetInteger(POSITION_TICKET);
   p.symbol = PositionGetString(POSITION_SYMBOL);
   p.side = PositionGetInteger(POSITION_TYPE) == POSITION_TYPE_BUY ? 0 : 1;
   p.volume = PositionGetDouble(POSITION_VOLUME);
   p.openPrice = PositionGetDouble(POSITION_PRICE_OPEN);
   p.sl = PositionGetDouble(POSITION_SL);
   p.tp = PositionGetDouble(POSITION_TP);
   p.price = PositionGetDouble(POSITION_PRICE_CURRENT);
   p.profit = PositionGetDouble(POSITION_PROFIT);
   p.swap = PositionGetDouble(POSITION_SWAP);
   p.magic = PositionGetInteger(POSITION_MAGIC);
   p.comment = StringSubstr(PositionGetString(POSITION_COMMENT), 0, 256);
   p.openTimeMs = TwBrokerMsToUtc(PositionGetInteger(POSITION_TIME_MSC), g_tz);
   p.updateTimeMs = TwBrokerMsToUtc(PositionGetInteger(POSITION_TIME_UPDATE_MSC), g_tz);
  }

bool FindOpenById(const ulong id, TwPos &p)
  {
   for(int i = PositionsTotal() - 1; i >= 0; i--)
     {
      ulong ticket = PositionGetTicket(i);
      if(ticket == 0)
         continue;
      if((ulong)PositionGetInteger(POSITION_IDENTIFIER) == id)
        {
         ReadSelectedPosition(p);
         return true;
        }
     }
   return false;
  }

// Commission and fees paid so far on a position: MT5 keeps them on its deals.
double PositionCommission(const ulong id)
  {
   if(!HistorySelectByPosition((long)id))
      return 0.0;
   double total = 0.0;
   for(int i = 0; i < HistoryDealsTotal(); i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0)
         continue;
      total += HistoryDealGetDouble(deal, DEAL_COMMISSION) + HistoryDealGetDouble(deal, DEAL_FEE);
     }
   return total;
  }

// Close price, realised profit (every exit deal, partial closes included) and reason of a
// position from its deals. False while the history holds no exit deal for it.
bool ReadCloseDetails(const ulong id, TwClose &c)
  {
   c.price = 0.0;
   c.profit = 0.0;
   c.reason = "";
   c.tsMs = TwNowMs();
   c.commission = 0.0;
   c.swap = 0.0;
   if(!HistorySelectByPosition((long)id))
      return false;
   bool found = false;
   long lastTime = -1;
   for(int i = 0; i < HistoryDealsTotal(); i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0)
         continue;
      c.commission += HistoryDealGetDouble(deal, DEAL_COMMISSION) + HistoryDealGetDouble(deal, DEAL_FEE);
      c.swap += HistoryDealGetDouble(deal, DEAL_SWAP);
      long entry = HistoryDealGetInteger(deal, DEAL_ENTRY);
      if(!IsExitEntry(entry))
         continue;
      found = true;
      c.profit += HistoryDealGetDouble(deal, DEAL_PROFIT);
      long t = HistoryDealGetInteger(deal, DEAL_TIME_MSC);
      if(t >= lastTime)
        {
         lastTime = t;
         c.price = HistoryDealGetDouble(deal, DEAL_PRICE);
         c.reason = DealReasonName(HistoryDealGetInteger(deal, DEAL_REASON));
        }
     }
   if(found)
      c.tsMs = TwBrokerMsToUtc(lastTime, g_tz);
   return found;
  }

// A position rebuilt from its deals: for one that closed before the EA ever saw it open.
bool BuildFromHistory(const ulong id, TwPos &p)
  {
   TwPosClear(p);
   if(!HistorySelectByPosition((long)id))
      return false;
   bool found = false;
   for(int i = 0; i < HistoryDealsTotal(); i++)
     {
      ulong deal = HistoryDealGetTicket(i);
      if(deal == 0 || HistoryDealGetInteger(deal, DEAL_ENTRY) != DEAL_ENTRY_IN)
         continue;
      if(!found)
        {
         p.id = id;
         p.ticket = id;
         p.symbol = HistoryDealGetString(deal, DEAL_SYMBOL);
         p.side = HistoryDealGetInteger(deal, DEAL_TYPE) == DEAL_TYPE_BUY ? 0 : 1;
         p.openPrice = HistoryDealGetDouble(deal, DEAL_PRICE);
         p.openTimeMs = TwBrokerMsToUtc(HistoryDealGetInteger(deal, DEAL_TIME_MSC), g_tz);
         p.magic = HistoryDealGetInteger(deal, DEAL_MAGIC);
         p.comment = StringSubstr(HistoryDealGetString(deal, DEAL_COMMENT), 0, 256);
         found = true;
        }
      p.volume += HistoryDealGetDouble(deal, DEAL_VOLUME);
     }
   return found && p.volume > 0.0 && p.symbol != "";
  }

//+------------------------------------------------------------------+
//| Protocol messages. Every field is written with a literal name    |
//| through CJsonWriter: tests/test_ea_schema.py checks them all     |
//| against the hub's schema (src/tradewire/ingest/protocol.py).     |
//+------------------------------------------------------------------+
void WritePosition(CJsonWriter &w, const TwPos &p)
  {
   int digits = TwPriceDigits(p.symbol);
   w.BeginObject("Position");
   w.Int("id", (long)p.id);
   w.Int("ticket", (long)p.ticket);
   w.Str("symbol", p.symbol);
   w.Str("side", SideName(p.side));
   w.Qty("volume", p.volume, TwVolumeDigits(p.symbol));
   w.Price("openPrice", p.openPrice, digits);
   w.Price("price", p.price, digits);
   w.Price("sl", p.sl, digits);
   w.Price("tp", p.tp, digits);
   w.Money("profit", p.profit);
   w.Money("swap", p.swap);
   w.Money("commission", p.commission);
   w.Int("magic", p.magic);
   w.Str("comment", p.comment);
   w.Int("openTime", p.openTimeMs);
   w.EndObject();
  }

string HelloMessage()
  {
   CJsonWriter w;
   w.BeginMessage("hello");
   w.Str("platform", "MT5");
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
      w.Null("marginLevel");   // terminals report 0 here; the protocol says null
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
   for(int i = 0; i < PositionsTotal(); i++)
     {
      if(PositionGetTicket(i) == 0)
         continue;
      TwPos p;
      ReadSelectedPosition(p);
      int k = KnownIndex(p.id);
      p.commission = k >= 0 ? g_known[k].commission : 0.0;
      WritePosition(w, p);
     }
   w.EndArray();
   w.EndObject();
   return w.Text();
  }

// "" when no configured symbol has a usable quote (bid/ask 0 while the terminal is offline).
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
      w.Int("ts", TwBrokerMsToUtc(t.time_msc, g_tz));
      w.EndObject();
      count++;
     }
   w.EndArray();
   w.EndObject();
   return count > 0 ? w.Text() : "";
  }

string HeartbeatMessage()
  {
   CJsonWriter w;
   w.BeginMessage("heartbeat");
   w.Int("ts", TwNowMs());
   w.EndObject();
   return w.Text();
  }

// A durable position event. seq and id come first: the outbox renumbers them there.
string PositionEventMessage(const long seq, const string event, const TwPos &p, const long tsMs, const string reason,
                            const bool withClose, const double closePrice, const double profit)
  {
   CJsonWriter w;
   w.BeginMessage("position");
   w.Int("seq", seq);
   w.Str("id", TwLower(event) + "-" + IntegerToString((long)p.id) + "-" + IntegerToString(seq));
   w.Str("event", event);
   w.Int("ts", tsMs);
   w.Key("position");
   WritePosition(w, p);
   if(withClose)
     {
      w.Price("closePrice", closePrice, TwPriceDigits(p.symbol));
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

//+------------------------------------------------------------------+
//| Durable events: into the outbox file first, then onto the wire.  |
//+------------------------------------------------------------------+
void EmitPositionEvent(const string event, const TwPos &p, const long tsMs, const string reason, const bool withClose,
                       const double closePrice, const double profit)
  {
   long seq = g_outbox.NextSeq();
   g_outbox.Append(seq, PositionEventMessage(seq, event, p, tsMs, reason, withClose, closePrice, profit));
   SaveState();
   string tag = IsSystemMagic(p.magic) ? " [system]" : "";
   string detail = withClose ? " at " + TwJsonNumber(closePrice, TwPriceDigits(p.symbol)) + ", profit "
                   + TwJsonNumber(profit, g_twMoneyDigits) : "";
   TwInfo(event + " position " + IntegerToString((long)p.id) + " " + p.symbol + " " + SideName(p.side) + " "
          + TwJsonNumber(p.volume, TwVolumeDigits(p.symbol)) + detail + (reason != "" ? " (" + reason + ")" : "")
          + " seq " + IntegerToString(seq) + tag);
   if(withClose && reason == "stopout" && IsSystemMagic(p.magic))
      TwWarn("system trade " + IntegerToString((long)p.id) + " was closed by a stop-out");
   FlushDurable();
  }

void EmitError(const string code, const string message, const bool critical)
  {
   long seq = g_outbox.NextSeq();
   g_outbox.Append(seq, ErrorMessage(seq, code, message, critical));
   SaveState();
   TwWarn("reported to the hub: " + code + ": " + message);
   FlushDurable();
  }

string ModifyReason(const TwPos &before, const TwPos &after, const long dealEntry)
  {
   if(dealEntry == DEAL_ENTRY_INOUT || before.side != after.side)
      return "reversal";   // netting: an opposite deal larger than the position
   if(after.volume < before.volume - 1e-10)
      return "partial";
   if(after.volume > before.volume + 1e-10)
      return "add";
   return "";              // an SL/TP edit
  }

bool Changed(const TwPos &a, const TwPos &b)
  {
   return a.side != b.side || !TwSame(a.volume, b.volume) || !TwSame(a.openPrice, b.openPrice) || !TwSame(a.sl, b.sl)
          || !TwSame(a.tp, b.tp);
  }

// A position the terminal lists now: OPEN when new, MODIFY when SL/TP/volume/side changed.
void ObservePosition(TwPos &p, const ulong deal, const long dealEntry)
  {
   int k = KnownIndex(p.id);
   if(k < 0)
     {
      p.commission = PositionCommission(p.id);
      AddKnown(p);
      EmitPositionEvent("OPEN", p, p.openTimeMs > 0 ? p.openTimeMs : TwNowMs(), "", false, 0.0, 0.0);
      return;
     }
   p.commission = deal > 0 ? PositionCommission(p.id) : g_known[k].commission;
   if(Changed(g_known[k], p))
     {
      string reason = ModifyReason(g_known[k], p, dealEntry);
      g_known[k] = p;
      g_stateDirty = true;
      EmitPositionEvent("MODIFY", p, p.updateTimeMs > 0 ? p.updateTimeMs : TwNowMs(), reason, false, 0.0, 0.0);
      return;
     }
   // Same position, new prices: keep them for a CLOSE that finds no deal.
   g_known[k].ticket = p.ticket;
   g_known[k].price = p.price;
   g_known[k].profit = p.profit;
   g_known[k].swap = p.swap;
   g_known[k].commission = p.commission;
   g_known[k].goneSinceMs = 0;
  }

// A known position that the terminal no longer lists: CLOSE, with its deal details.
void CloseKnown(const int k)
  {
   TwPos p;
   p = g_known[k];
   TwPos open;
   if(FindOpenById(p.id, open))
     {
      // Still open: the list changed while it was walked (an index skipped). A partial close's exit deal
      // in the history must not pass for its CLOSE.
      g_known[k].goneSinceMs = 0;
      return;
     }
   TwClose c;
   bool found = ReadCloseDetails(p.id, c);
   if(!found)
     {
      // The exit deal may not have reached the history yet: wait a little before giving up on it.
      ulong now = GetTickCount64();
      if(g_known[k].goneSinceMs == 0)
        {
         g_known[k].goneSinceMs = now;
         return;
        }
      if(now - g_known[k].goneSinceMs < TW_CLOSE_GRACE_MS)
         return;
      EmitError("close_details_missing", "position " + IntegerToString((long)p.id) + " " + p.symbol
                + " closed but its exit deal is not in the terminal's history: CLOSE sent without price and profit", false);
     }
   RemoveKnown(k);
   if(found)
     {
      p.price = c.price;
      p.profit = c.profit;
      p.commission = c.commission;
      p.swap = c.swap;
     }
   EmitPositionEvent("CLOSE", p, found ? c.tsMs : TwNowMs(), found ? c.reason : "", found, c.price, c.profit);
  }

// Bring one position (by POSITION_IDENTIFIER) in line with the terminal. `deal` is the deal that
// caused the call (0 when none): its entry labels the change.
void SyncPosition(const ulong id, const ulong deal)
  {
   long entry = -1;
   if(deal > 0 && HistoryDealSelect(deal))
      entry = HistoryDealGetInteger(deal, DEAL_ENTRY);
   TwPos p;
   if(FindOpenById(id, p))
     {
      ObservePosition(p, deal, entry);
      return;
     }
   int k = KnownIndex(id);
   if(k >= 0)
     {
      CloseKnown(k);
      return;
     }
   if(IsExitEntry(entry))
     {
      // Opened and closed before the EA saw it open: report the CLOSE (the hub records the OPEN).
      TwPos q;
      TwClose c;
      if(BuildFromHistory(id, q) && ReadCloseDetails(id, c))
        {
         q.price = c.price;
         q.profit = c.profit;
         q.commission = c.commission;
         q.swap = c.swap;
         EmitPositionEvent("CLOSE", q, c.tsMs, c.reason, true, c.price, c.profit);
        }
     }
  }

// Connected to the trade server for TW_SETTLE_MS at least: a terminal cut off, or just back and still
// loading its lists, may list no positions, and that is not "all closed" (nor an empty snapshot).
bool TerminalSettled()
  {
   if(!TerminalInfoInteger(TERMINAL_CONNECTED))
     {
      g_connectedAtMs = 0;
      return false;
     }
   ulong now = GetTickCount64();
   if(g_connectedAtMs == 0)
      g_connectedAtMs = now;
   return now - g_connectedAtMs >= TW_SETTLE_MS;
  }

// The safety net, every timer tick: whatever OnTradeTransaction missed (the EA was detached, the
// terminal restarted, an event was dropped) is found by comparing the open set with the known one.
void SyncAll()
  {
   if(!TerminalSettled())
      return;   // an unsynchronised terminal may list no positions: that is not "all closed"
   g_tz = TwBrokerOffsetSec();   // follows DST changes; meaningful once the terminal is connected
   ulong seen[];
   int total = PositionsTotal();
   for(int i = 0; i < total; i++)
     {
      if(PositionGetTicket(i) == 0)
         continue;
      TwPos p;
      ReadSelectedPosition(p);
      int s = ArraySize(seen);
      ArrayResize(seen, s + 1);
      seen[s] = p.id;
      ObservePosition(p, 0, -1);
     }
   for(int k = ArraySize(g_known) - 1; k >= 0; k--)
     {
      bool isOpen = false;
      for(int s = 0; s < ArraySize(seen) && !isOpen; s++)
         isOpen = seen[s] == g_known[k].id;
      if(!isOpen)
         CloseKnown(k);
     }
  }

//+------------------------------------------------------------------+
//| The hub connection                                               |
//+------------------------------------------------------------------+
// One frame: a message alone, or an array of `count` of them from `from`.
string JoinFrame(string &items[], const int from, const int count)
  {
   if(count == 1)
      return items[from];
   string frame = "[" + items[from];
   for(int i = from + 1; i < from + count; i++)
      frame += "," + items[i];
   return frame + "]";
  }

bool SendFrame(const string frame)
  {
   TwDebug("send " + frame);
   if(!g_ws.SendText(frame))
     {
      TwWarn("send failed: " + g_ws.LastError());
      return false;
     }
   return true;
  }

// Durable messages go out as one frame (one durable frame in flight: see FlushDurable, which bounds it).
bool SendBatch(string &items[])
  {
   int n = ArraySize(items);
   if(n == 0 || !g_ws.IsOpen())
      return false;
   return SendFrame(JoinFrame(items, 0, n));
  }

// Volatile messages (account, positions, ticks, heartbeat) go out in as few frames as fit g_maxFrameBytes.
// Through API Gateway (32 KB) a positions snapshot of about 130 positions is over it alone: it is left out,
// as the agent does (the trade events keep the hub's list), else API Gateway would close the connection for
// it at every reconnect and nothing durable would get through.
bool SendVolatile(string &items[])
  {
   if(ArraySize(items) == 0 || !g_ws.IsOpen())
      return false;
   string kept[];
   int sizes[];
   for(int i = 0; i < ArraySize(items); i++)
     {
      if(items[i] == "")
         continue;
      int size = TwUtf8Len(items[i]) + 1;   // with its comma or bracket
      if(size + 1 > g_maxFrameBytes)
        {
         if(!g_tooBigSaid)
            TwWarn("a message of " + IntegerToString(size - 1) + " bytes is over the frame limit ("
                   + IntegerToString(g_maxFrameBytes) + "): not sent (the hub keeps positions from the trade events)");
         g_tooBigSaid = true;
         continue;
        }
      TwPush(kept, items[i]);
      int k = ArraySize(sizes);
      ArrayResize(sizes, k + 1);
      sizes[k] = size;
     }
   int n = ArraySize(kept), from = 0, bytes = 1;
   for(int i = 0; i < n; i++)
     {
      if(i > from && (i - from >= TW_MAX_BATCH || bytes + sizes[i] > g_maxFrameBytes))
        {
         if(!SendFrame(JoinFrame(kept, from, i - from)))
            return false;
         from = i;
         bytes = 1;
        }
      bytes += sizes[i];
     }
   return n == 0 || SendFrame(JoinFrame(kept, from, n - from));
  }

// Whether a durable message sent on this connection still waits for its ack.
bool DurableUnanswered()
  {
   return g_outbox.Count() > 0 && g_outbox.SeqAt(0) <= g_sentSeq;
  }

// Whether a positions snapshot must wait: a durable message made before it is not sent yet (a backlog going
// out a frame at a time, or messages behind an unanswered frame). Arriving first, a snapshot without a
// position has the hub record its CLOSE, and the position's MODIFYs still to come are not stored. Through
// API Gateway a connection's frames run as concurrent Lambda calls: there the frame in flight counts too.
bool SnapshotMustWait()
  {
   for(int i = 0; i < g_outbox.Count(); i++)
      if(g_outbox.SeqAt(i) > g_sentSeq)
         return true;
   return g_maxFrameBytes == TW_API_GATEWAY_FRAME_BYTES && DurableUnanswered();
  }

// Send the next durable frame (the messages above g_sentSeq, in seq order, bounded in count and size),
// but only once the previous one is answered. Acks are cumulative: with two frames in flight, a hub that
// runs them out of order (API Gateway hands a connection's frames to concurrent Lambda calls) would ack
// the later one while the earlier one is not stored yet, or never is, and the EA would drop it.
void FlushDurable()
  {
   if(!g_welcomed || !g_ws.IsOpen() || DurableUnanswered())
      return;
   string batch[];
   int bytes = 1;   // the array's brackets, and a comma per message as it joins
   long last = g_sentSeq;
   for(int i = 0; i < g_outbox.Count(); i++)
     {
      long seq = g_outbox.SeqAt(i);
      if(seq <= g_sentSeq)
         continue;
      string msg = g_outbox.MessageAt(i);
      int size = TwUtf8Len(msg) + 1;
      if(ArraySize(batch) >= TW_MAX_BATCH || (ArraySize(batch) > 0 && bytes + size > g_maxFrameBytes))
         break;
      TwPush(batch, msg);
      bytes += size;
      last = seq;
     }
   if(ArraySize(batch) > 0 && SendBatch(batch))
     {
      g_sentSeq = last;
      g_durableSentMs = GetTickCount64();
     }
  }

// The hub refused a durable message for good (it names the message's id): resent, it would be refused
// again and hold up every message after it.
bool RefusedForGood(const string code)
  {
   return code == "invalid_message" || code == "unknown_type" || code == "wrong_account";
  }

void ScheduleReconnect(const int closeCode, const string why)
  {
   g_helloSent = false;
   g_welcomed = false;
   g_failures++;
   double ceiling = MathMin(60.0, MathPow(2.0, MathMin(g_failures - 1, 6)));   // 1, 2, 4 ... 60 s
   if(closeCode == 1008)
     {
      TwError("the hub refused the token (" + why + "). Issue one with `tradewire token issue --account ID` "
              + "and set it in the EA's InpToken input");
      ceiling = 300.0;
     }
   else if(closeCode == 4000)
     {
      TwWarn("the hub replaced this session with a newer one for the same account: is TradewireEA on two "
             + "terminals, or the tradewire agent running for this account too?");
      ceiling = MathMax(ceiling, 60.0);
     }
   else if(StringFind(why, "error 4014") >= 0)
     {
      TwError("the terminal does not allow this address: add the hub (" + InpServerUrl + ") in Tools > Options > "
              + "Expert Advisors > Allow WebRequest for listed URL");
      ceiling = MathMax(ceiling, 30.0);
     }
   else
      TwWarn("hub connection: " + why);
   double delay = ceiling / 2.0 + TwRandomUnit() * ceiling / 2.0;   // jitter: a fleet does not reconnect in step
   g_nextAttemptMs = GetTickCount64() + (ulong)(delay * 1000.0);
   TwInfo(StringFormat("reconnecting in %.1f s", delay));
  }

void OnDisconnected()
  {
   int code = g_ws.CloseCode();
   string why = "closed by the hub (close code " + IntegerToString(code) + (g_ws.CloseReason() != "" ? ": "
                + g_ws.CloseReason() : "") + ")";
   if(code == TW_WS_CLOSE_ABNORMAL || code == TW_WS_CLOSE_NONE)
      why = "connection lost" + (g_ws.LastError() != "" ? " (" + g_ws.LastError() + ")" : "");
   g_ws.Drop();
   ScheduleReconnect(code, why);
  }

void ConnectHub()
  {
   TwInfo("connecting to " + InpServerUrl);
   if(!g_ws.Connect(InpServerUrl, InpToken, TW_EA_NAME + "/" + TW_EA_VERSION + " (MT5)", TW_CONNECT_TIMEOUT))
     {
      ScheduleReconnect(g_ws.CloseCode(), g_ws.LastError());
      return;
     }
   g_tz = TwBrokerOffsetSec();
   if(!g_ws.SendText(HelloMessage()))
     {
      ScheduleReconnect(TW_WS_CLOSE_ABNORMAL, "cannot send hello: " + g_ws.LastError());
      return;
     }
   g_helloSent = true;
   g_welcomed = false;
   g_helloAtMs = GetTickCount64();
  }

void OnWelcome(const long ackedSeq, const long heartbeatSec)
  {
   g_welcomed = true;
   g_failures = 0;
   int before = g_outbox.Count();
   bool renumbered = g_outbox.OnWelcome(ackedSeq);
   SaveState();
   g_sentSeq = 0;
   long hb = InpHeartbeatSec;
   if(heartbeatSec > 0 && heartbeatSec < hb)
      hb = heartbeatSec;   // the hub's liveness window is built on its own heartbeat
   g_heartbeatSec = hb < 1 ? 1 : (int)hb;
   TwInfo("connected to " + g_ws.Endpoint() + ": ackedSeq " + IntegerToString(ackedSeq) + ", heartbeat "
          + IntegerToString(g_heartbeatSec) + " s, " + IntegerToString(before - g_outbox.Count())
          + " acked while away, resending " + IntegerToString(g_outbox.Count())
          + (renumbered ? " (renumbered above the hub's seq)" : ""));
   FlushDurable();
   // A full snapshot after every (re)connect: the hub reconciles whatever it missed.
   string items[];
   TwPush(items, AccountMessage());
   bool snapshot = TerminalSettled() && !SnapshotMustWait();   // cut off or still loading, it may list nothing
   if(snapshot)
      TwPush(items, PositionsMessage());
   TwPush(items, TicksMessage());
   SendVolatile(items);
   ulong now = GetTickCount64();
   g_lastVolatileMs = now;
   g_lastSnapshotMs = snapshot ? now : 0;   // held for the backlog: due as soon as it is out
   g_lastHeartbeatMs = now;
  }

void HandleServerMessage(const string text)
  {
   TwDebug("recv " + text);
   string type = TwJsonRaw(text, "type");
   if(type == "welcome")
      OnWelcome(TwJsonLong(text, "ackedSeq", 0), TwJsonLong(text, "heartbeatSec", InpHeartbeatSec));
   else if(type == "ack")
     {
      if(g_outbox.Ack(TwJsonLong(text, "seq", 0)) > 0)
         SaveState();
      FlushDurable();   // the next durable frame may go now
     }
   else if(type == "error")
     {
      string ref = TwJsonRaw(text, "ref");
      string code = TwJsonRaw(text, "code");
      if(RefusedForGood(code) && ref != "" && g_outbox.Refuse(ref) > 0)
        {
         TwError("hub refused " + ref + " for good, dropped from the outbox: " + code + ": " + TwJsonRaw(text, "message"));
         SaveState();
         FlushDurable();
        }
      else
         TwWarn("hub refused " + ref + ": " + code + ": " + TwJsonRaw(text, "message"));
     }
  }

//+------------------------------------------------------------------+
//| Start-up: the account must be known to pick the outbox file.     |
//+------------------------------------------------------------------+
bool EnsureReady()
  {
   if(g_ready)
      return true;
   long login = AccountInfoInteger(ACCOUNT_LOGIN);
   if(login == 0)
      return false;   // not logged in yet: try again on the next timer tick
   static bool s_warnedBusy = false;
   if(!ClaimAccount(login))
     {
      if(!s_warnedBusy)
         TwError("TradewireEA already streams account " + IntegerToString(login)
                 + " from another chart: attach it to one chart per account. This copy stays idle.");
      s_warnedBusy = true;
      return false;
     }
   g_login = login;
   g_tz = TwBrokerOffsetSec();
   long money = AccountInfoInteger(ACCOUNT_CURRENCY_DIGITS);
   g_twMoneyDigits = money >= 0 && money <= 8 ? (int)money : 2;
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
      TwPos p;
      if(ParseKnownLine(lines[i], p))
         AddKnown(p);
     }
   g_ready = true;
   SaveState();
   TwInfo(TW_EA_NAME + " " + TW_EA_VERSION + " for account " + IntegerToString(login) + " on "
          + AccountInfoString(ACCOUNT_SERVER) + ": outbox " + file + " (seq " + IntegerToString(g_outbox.Seq()) + ", "
          + IntegerToString(g_outbox.Count()) + " unacked, " + IntegerToString(ArraySize(g_known))
          + " known positions), broker time UTC" + (g_tz >= 0 ? "+" : "") + DoubleToString(g_tz / 3600.0, 2) + " h");
   return true;
  }

//+------------------------------------------------------------------+
//| Event handlers                                                   |
//+------------------------------------------------------------------+
int OnInit()
  {
   // Globals survive a re-initialisation (chart or input change): start from a clean state.
   g_ready = false;
   g_helloSent = false;
   g_welcomed = false;
   g_failures = 0;
   g_nextAttemptMs = 0;
   g_connectedAtMs = 0;
   g_stateDirty = false;
   ArrayResize(g_known, 0);
   ArrayResize(g_symbols, 0);
   g_twLogLevel = InpLogLevel;
   TwRandomInit();
   if(TwTrim(InpToken) == "")
     {
      Alert("TradewireEA: set the InpToken input (issue one on the hub: tradewire token issue --account ID)");
      return INIT_PARAMETERS_INCORRECT;
     }
   CTwWebSocket probe;
   if(!probe.ParseUrl(InpServerUrl))
     {
      Alert("TradewireEA: bad InpServerUrl '", InpServerUrl, "': ", probe.LastError());
      return INIT_PARAMETERS_INCORRECT;
     }
   g_maxFrameBytes = probe.ApiGateway() ? TW_API_GATEWAY_FRAME_BYTES : TW_MAX_FRAME_BYTES;
   g_tooBigSaid = false;
   if(MQLInfoInteger(MQL_TESTER))
      TwWarn("running in the Strategy Tester: there is no network there, nothing will be streamed");
   if(TwSplitList(InpSymbols, g_symbols) == 0)
      TwPush(g_symbols, _Symbol);
   for(int i = 0; i < ArraySize(g_symbols); i++)
      if(!SymbolSelect(g_symbols[i], true))
         TwWarn("symbol " + g_symbols[i] + " is not offered by this broker: no ticks for it");
   string magics[];
   ArrayResize(g_systemMagics, 0);
   int magicCount = TwSplitList(InpSystemMagics, magics);
   for(int i = 0; i < magicCount; i++)
     {
      int k = ArraySize(g_systemMagics);
      ArrayResize(g_systemMagics, k + 1);
      g_systemMagics[k] = StringToInteger(magics[i]);
     }
   g_heartbeatSec = InpHeartbeatSec > 0 ? InpHeartbeatSec : 10;
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
   if(g_ws.IsOpen())
      g_ws.Close(1001, "EA stopped");
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
   SyncAll();
   ulong now = GetTickCount64();
   if(!g_ws.IsOpen())
     {
      if(g_helloSent)
         OnDisconnected();
      else if(now >= g_nextAttemptMs)
         ConnectHub();
      if(g_stateDirty)
         SaveState();
      return;
     }
   string incoming[];
   int n = g_ws.Poll(incoming);
   for(int i = 0; i < n; i++)
      HandleServerMessage(incoming[i]);
   if(!g_ws.IsOpen())
     {
      OnDisconnected();
      return;
     }
   // Read again: a welcome or an ack handled just now may have sent a frame and stamped the time after the
   // first reading, and `now - stamp` in ulong would wrap to a huge age (a false ack timeout, a reconnect).
   now = GetTickCount64();
   if(!g_welcomed)
     {
      if(now - g_helloAtMs > TW_WELCOME_TIMEOUT)
        {
         g_ws.Close(1000, "no welcome");
         ScheduleReconnect(TW_WS_CLOSE_ABNORMAL, "no welcome within " + IntegerToString(TW_WELCOME_TIMEOUT / 1000) + " s");
        }
      return;
     }
   if(DurableUnanswered() && now - g_durableSentMs > TW_ACK_TIMEOUT)
     {
      g_ws.Close(1000, "no ack");
      ScheduleReconnect(TW_WS_CLOSE_ABNORMAL, "no ack for seq " + IntegerToString(g_outbox.SeqAt(0)) + " within "
                        + IntegerToString(TW_ACK_TIMEOUT / 1000) + " s");
      return;
     }
   FlushDurable();
   string items[];
   ulong volatileEvery = InpSendIntervalMs > 100 ? (ulong)InpSendIntervalMs : 100;
   ulong snapshotEvery = InpSnapshotSec > 1 ? (ulong)InpSnapshotSec * 1000 : 1000;
   if(now - g_lastVolatileMs >= volatileEvery)
     {
      TwPush(items, AccountMessage());
      TwPush(items, TicksMessage());
      g_lastVolatileMs = now;
     }
   if(now - g_lastSnapshotMs >= snapshotEvery && TerminalSettled() && !SnapshotMustWait())
     {
      // Only while connected to the trade server (as SyncAll): a terminal cut off may list no positions,
      // and the hub would record a CLOSE (for good) for every one it knew open.
      TwPush(items, PositionsMessage());
      g_lastSnapshotMs = now;
     }
   if(now - g_lastHeartbeatMs >= (ulong)g_heartbeatSec * 1000)
     {
      TwPush(items, HeartbeatMessage());
      g_lastHeartbeatMs = now;
     }
   SendVolatile(items);
   if(g_stateDirty)
      SaveState();
  }

void OnTradeTransaction(const MqlTradeTransaction &trans, const MqlTradeRequest &request, const MqlTradeResult &result)
  {
   if(!g_ready)
      return;
   if(trans.type == TRADE_TRANSACTION_DEAL_ADD)
     {
      // Open, close, partial close, close-by, reversal: the deal says which position and how.
      ulong id = trans.position;
      if(HistoryDealSelect(trans.deal))
         id = (ulong)HistoryDealGetInteger(trans.deal, DEAL_POSITION_ID);
      if(id > 0)   // balance and credit deals belong to no position
         SyncPosition(id, trans.deal);
     }
   else if(trans.type == TRADE_TRANSACTION_POSITION)
     {
      // A change not caused by a deal: SL/TP edits (and server-side volume or price changes).
      if(PositionSelectByTicket(trans.position))
         SyncPosition((ulong)PositionGetInteger(POSITION_IDENTIFIER), 0);
     }
   if(g_stateDirty)
      SaveState();
  }
//+------------------------------------------------------------------+
