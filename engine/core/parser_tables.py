"""Word tables for :mod:`livecart.core.parser`: the vocabulary of live-room chat, in simplified Chinese and English.

Everything here is data. Patterns are written against *normalised* text (NFKC, lower-cased, traditional
characters folded to simplified by :data:`T2S`), so each word appears once, in its simplified form.
"""

from __future__ import annotations

# Traditional -> simplified for the characters that occur in buy / ask / cancel comments and in common
# product names. Not a general converter: a character that does not matter to the parser may stay as it is.
_T2S_PAIRS = (
    "雞鸡 葉叶 來来 兩两 倆俩 個个 號号 鏈链 買买 賣卖 還还 嗎吗 錢钱 點点 幾几 樣样 這这 們们 給给 發发 貨货 "
    "郵邮 麼么 價价 訂订 單单 隻只 條条 筍笋 乾干 煙烟 麵面 無无 沒没 別别 經经 過过 問问 讓让 說说 會会 對对 "
    "謝谢 歡欢 變变 後后 時时 間间 開开 關关 長长 寶宝 貝贝 齊齐 帶带 現现 實实 東东 氣气 電电 話话 見见 "
    "覺觉 應应 該该 煩烦 幫帮 預预 優优 紅红 綠绿 藍蓝 黃黄 罐罐 蓋盖 裝装 搶抢 拿拿 錯错 嗯嗯 啥啥 麼么 "
    "趕赶 剛刚 結结 帳账 運运 費费 領领 張张 歲岁 鐘钟 塊块 幣币 萬万 億亿 剩剩 餘余 庫库 存存 瓶瓶 袋袋 "
    "紙纸 號号 們们 喲哟 囉啰 嘍喽 麗丽 漂漂 亮亮 棒棒 讚赞 愛爱 聽听 戲戏 頭头 臉脸 閨闺 蜜蜜 蛋蛋 糕糕 "
    "給给 適适 纔才 隊队 員员 飯饭 魚鱼 鮮鲜 雙双 兒儿 場场 孫孙 媽妈 爺爷 歸归 黨党 國国 點点 鐵铁 舊旧 "
    "請请 謝谢 嘗尝 試试 誰谁 選选 壞坏 鬆松 團团 購购 備备 準准 認认 識识 樂乐 筆笔 從从 寫写 條条 "
)
T2S: dict[int, str] = {}
for _pair in _T2S_PAIRS.split():
    if len(_pair) == 2 and _pair[0] != _pair[1]:
        T2S[ord(_pair[0])] = _pair[1]
# Multiplication signs and stars that NFKC leaves alone.
T2S[ord("×")] = "x"
T2S[ord("✕")] = "x"
T2S[ord("✖")] = "x"
T2S[ord("＊")] = "*"
T2S[ord("﹢")] = "+"
T2S[ord("＋")] = "+"
T2S[ord("＃")] = "#"
T2S[ord("？")] = "?"
T2S[ord("。")] = " "
T2S[ord("、")] = " "

#: Chinese numerals that may form a quantity (一 ... 九十九, 两, 俩, 百 for "a hundred", which is too many).
CN_DIGITS = {"零": 0, "〇": 0, "一": 1, "二": 2, "两": 2, "俩": 2, "三": 3, "四": 4, "五": 5, "六": 6,
             "七": 7, "八": 8, "九": 9}
#: Measure words that make a number a quantity (CJK). 包 is only a measure word when not the 包 of 包邮.
MEASURE_CN = ("件", "份", "盒", "箱", "斤", "瓶", "罐", "袋", "包(?!邮)", "单", "个", "只", "套", "桶", "提",
              "把", "条", "对", "双", "组", "支", "颗", "枚")
#: English measure words; filler on their own, they only make the number before them explicit.
MEASURE_EN = frozenset({"jar", "jars", "box", "boxes", "bag", "bags", "pack", "packs", "pc", "pcs", "piece",
                        "pieces", "bottle", "bottles", "unit", "units", "of", "more", "set", "sets"})
#: A number followed by one of these is a date, time, age, price or weight: not a quantity.
UNIT_NOISE_CN = ("年", "月", "日", "天", "点", "分", "秒", "岁", "块", "元", "毛", "角", "万", "千", "百", "亿",
                 "w", "k", "kg", "cm", "mm", "m", "g", "克", "米", "度", "楼", "%", "周", "小时", "次", "遍",
                 "人", "后", "多", "楼", "倍", "折")

ENGLISH_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8,
                   "nine": 9, "ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14,
                   "fifteen": 15, "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19,
                   "twenty": 20, "thirty": 30, "forty": 40, "fifty": 50, "zero": 0, "dozen": 12,
                   "couple": 2, "hundred": 100}

# --- Chinese phrase classes (regex fragments; longest alternatives first inside each class) ---------------

#: Everyday words that contain a product alias, a verb or a numeral but mean something else.
#: They are matched before aliases so that 粉丝 is fans, not rice noodles. Words that are themselves an alias
#: in a given catalogue are dropped from this list when that catalogue is compiled.
NOISE_CN = (
    "粉丝", "老粉", "新粉", "铁粉", "真爱粉", "路人粉", "粉粉", "涨粉", "脑残粉", "黑粉", "粉红", "粉色", "粉底",
    "面粉", "奶粉",
    "笨蛋", "完蛋", "蛋糕", "滚蛋", "扯蛋", "捣蛋", "蛋疼", "脸蛋", "坏蛋", "混蛋", "傻蛋", "蛋黄酥", "皮蛋瘦肉粥",
    "闺蜜", "甜蜜", "蜜蜂", "蜜月", "秘密", "蜜糖", "奶茶", "茶几", "喝茶", "下午茶", "茶杯", "茶馆", "绿茶婊",
    "大家", "大哥", "大姐", "大神", "大佬", "大概", "大人", "大叔", "大爷", "大妈", "大娘", "大主播", "大美女",
    "大型", "伟大", "长大", "大学", "大声", "大多", "大部分", "大小", "大方", "大力", "加大", "太大", "好大",
    "小姐姐", "小哥哥", "小姐", "小哥", "小伙", "小时候", "小时", "小心", "小编", "小朋友", "小孩", "小区",
    "小可爱", "小仙女", "小宝贝", "小助理", "小店", "小黄车", "小小",
    "一起", "一下", "一定", "一样", "一直", "一点", "一般", "一会", "万一", "第一", "一个人", "统一", "唯一",
    "一次", "一天", "一年", "一遍", "一边", "一些", "一切", "一路", "一生", "一家", "一句", "一眼", "看一看",
    "两个人", "俩人", "十分", "十足", "三八", "九九", "一一", "二维码", "二手", "一会儿", "一口",
    "要是", "需要", "重要", "主要", "只要", "不要脸", "要命", "要求", "想要看", "要加油", "要去", "要睡", "要走",
    "来了", "来自", "来看", "回来", "后来", "原来", "起来", "出来", "看来", "本来", "过来", "来过", "来啦",
    "来晚", "下来", "进来", "未来", "从来", "来回", "来的", "来吧", "来来来", "来来",
    "拍照", "拍摄", "拍得", "拍的好", "拍视频", "拍卖", "拍拍",
    "号码", "账号", "称号", "信号", "口号", "型号", "几号发", "号称",
    "扣扣", "扣分", "扣子", "折扣", "扣款",
    "买单吗", "卖完", "卖光", "买不起", "买不到", "抢不到", "没抢到", "抢到了",
    "拍一下", "拍给", "拍近", "拍特写", "给我们", "拿起", "拿出", "要抢", "要开始", "来个特写", "来首", "来波",
    # A negated cancel keeps the order: never a cancel.
    "不要取消", "别取消", "不取消", "没取消", "不用取消",
    # 不要太好吃 is praise ("so tasty"), not a negation; 取消关注 is unfollowing the room, not an order.
    "不要太", "取消关注", "取关", "取消静音", "取消点赞",
)
#: English phrases that are everyday talk although they contain a keyword.
NOISE_EN = ("don't cancel", "dont cancel", "do not cancel", "no cancel", "not cancel", "never cancel",
            "can't cancel", "cant cancel", "cannot cancel", "won't cancel", "wont cancel", "unfollow",
            "take care", "take my money")

#: The comment reports a purchase made before (elsewhere, or earlier): not a new order.
PAST_CN = ("已拍", "已买", "已下单", "已付款", "已付", "已经拍", "已经买", "已经下单", "拍了", "买了", "买过",
           "拍过", "上次", "之前买", "以前买", "收到了", "收到", "到货了", "回购", "吃过", "付款了", "下单了",
           "已抢", "抢到", "拍到", "买到", "拍的", "买的", "刚才拍", "刚拍", "刚买")
#: Cancel an order.
CANCEL_CN = ("不要了", "不要啦", "不买了", "不买啦", "取消", "退掉", "退单", "退了", "算了不要", "不拍了",
             "别要了", "撤单", "撤销", "不想要了")
#: Questions about a product: price, stock, shipping, which link.
ASK_COMMERCE_CN = ("多少钱", "多钱", "几块", "几元", "价格", "价钱", "什么价", "怎么卖", "包邮", "发货", "快递",
                   "运费", "还有没有", "有没有", "还有", "几号链接", "哪个链接", "几号", "保质期", "多大", "多重",
                   "几斤", "几个", "几盒", "怎么买", "怎么拍", "在哪拍", "在哪买", "哪里买", "库存", "剩多少",
                   "还剩", "有货", "没货", "现货", "优惠", "便宜点", "能便宜", "多久", "限购")
#: Question markers that do not by themselves concern a product.
ASK_GENERIC_CN = ("吗", "么", "什么", "怎么", "怎样", "如何", "为什么", "啥", "咋", "哪", "能不能", "可不可以",
                  "是不是", "有没", "?", "是什么", "是啥", "是哪个", "哪个是", "产地")
#: The commenter does not want something: never an order.
NEG_CN = ("不要", "不买", "不想要", "别给我", "别拍", "别买", "没要", "不需要", "不用", "要不要", "不来")
#: Verbs that buy. SOLO verbs buy the featured product even with nothing else said (要, 我也要).
VERB_SOLO_CN = ("我要了", "要了", "要")
VERB_CN = ("来", "拍", "买", "抢", "拿", "订", "下单", "预定", "预订", "给我", "再来", "再要", "留")
#: Words that carry no meaning for the parser; they do not count as unexplained text.
FILLER_CN = ("主播", "谢谢", "麻烦", "这个", "那个", "我们", "我", "也", "还", "再", "都", "了", "啊", "呀", "哦",
             "的", "吧", "给", "帮", "先", "就", "和", "跟", "呢", "嗯", "噢", "喔", "滴", "哟", "嘛",
             "宝宝", "宝宝们", "宝子", "宝子们", "亲", "亲们", "亲爱的", "姐", "哥", "姐妹", "姐妹们", "老铁", "老铁们",
             "老板", "家人们", "各位", "们", "一共", "共", "总共", "另外", "及", "号链接",
             "链接", "那", "这", "个", "好", "好的", "在", "请", "您", "你", "好吃", "好喝")
#: Talk about a product rather than an order for it: eating it (一天吃两个鸡蛋), looking at it (拿起来看看),
#: its price (2块钱一个, 68贵了). Without a buy verb or "+N" such a comment is not an order.
TALK_CN = ("吃", "喝", "煮", "炒", "泡", "看", "尝", "试", "贵", "便宜", "划算", "值", "钱", "价",
           "坏", "碎", "破", "烂", "臭", "漏")  # and complaints: 鸡蛋坏了两个

# --- English ------------------------------------------------------------------------------------------

PAST_EN = ("already", "bought", "ordered", "received", "yesterday", "last time", "last week", "ate", "had",
           "got mine", "got my", "arrived", "delivered", "ago", "paid", "was")
CANCEL_EN = ("changed my mind", "change my mind", "cancel", "cancelled", "canceled", "never mind", "nevermind",
             "nvm", "remove", "don't want it", "dont want it", "no longer")
ASK_COMMERCE_EN = ("how much", "how many", "price", "prices", "cost", "shipping", "ship", "ships", "available",
                   "in stock", "any left", "still have", "sold out", "left", "which link", "what link",
                   "expire", "expiry", "delivery", "postage")
ASK_GENERIC_EN = ("how", "what", "what's", "whats", "when", "where", "which", "why", "who", "is", "are", "does",
                  "do", "can", "could", "would", "will", "any", "anyone")
NEG_EN = ("don't", "dont", "do not", "not", "no", "never", "without", "won't", "wont")
VERB_SOLO_EN = ("mine", "sold", "i'll take it", "ill take it", "i will take it", "i'll take that",
                "i'll take this", "i'll take one", "take it")
VERB_EN = ("take", "want", "buy", "get", "order", "add", "claim", "need", "grab", "put", "can i get",
           "could i get", "can i have", "could i have", "may i have", "may i get", "can i take", "can i order",
           "let me get", "let me have", "put me down for", "i'd like", "i would like")
FILLER_EN = ("i", "i'll", "ill", "i'd", "id", "i'm", "im", "will", "would", "like", "the", "a", "an", "some",
             "please", "pls", "plz", "too", "also", "and", "for", "my", "me", "to", "of", "more",
             "jar", "please!", "thanks", "thank", "you", "it", "this", "that", "those", "these", "yes", "yeah",
             "yep", "ok", "okay", "love", "lol", "oh", "hi", "hello", "hey", "wow", "omg", "x", "each", "them",
             "us", "sis", "girl", "dear", "babe", "hun", "mom", "same", "here", "just", "now", "asap", "quick",
             "link")
#: Words one edit away from an alias that are ordinary English: never corrected to the alias.
FUZZY_STOP = frozenset({"money", "honest", "phone", "hones", "bones", "boney", "hondas", "teas", "eggy",
                        "smaller", "larger", "shoot"})
