"""The phrases that signal a crisis, per language, as regular expressions.

Written as the words are spelled (accents, capitals and full-width forms are folded
away on both sides: `bot.safety.normalize`). Three kinds per language:

    self_harm  a risk of suicide or self-harm, direct or indirect ("I want to die",
               "everyone would be better off without me")
    danger     someone is in danger from another person ("he keeps hitting me")
    uncertain  worrying but ambiguous ("I can't take it anymore"): not a crisis by
               itself; the optional classifier is asked about these

Patterns are linear: no nested quantifiers, gaps are bounded (`(?:\\w+ ){0,3}`), so a
megabyte costs a bounded, linear scan. Hyperbole ("this homework is killing me",
"笑死", "me muero de risa") is kept out by asking for the first person and intent
rather than by lists of exceptions; the few idioms that share a crisis phrase
("想死你了": I miss you terribly) are excluded in the pattern itself.
"""

from __future__ import annotations

__all__ = ["PATTERNS"]

# Bounded gaps: up to N words between two parts of a phrase.
_W2 = r"(?:[\w']{1,24},? ){0,2}"
_W3 = r"(?:[\w']{1,24},? ){0,3}"
_W5 = r"(?:[\w']{1,24},? ){0,5}"

_EN_PEOPLE = (
    r"(?:he|she|they|someone|somebody|my (?:dad|father|mom|mum|mother|husband|wife|"
    r"boyfriend|girlfriend|partner|step ?dad|step ?father|step ?mom|uncle|brother|ex))"
)

PATTERNS: dict[str, dict[str, tuple[str, ...]]] = {
    "en": {
        "self_harm": (
            r"\b(?:kill|killing|hang|hanging) (?:my ?self)\b",
            r"\bsuicid(?:e|al)\b(?! squad| doors?| mission| bomb| run| pact with the)",
            r"\bself[- ]?harm",
            r"\b(?:want|wanna|going|gonna|need|have|urge|tempted|thinking about|think about|"
            r"planning|plan|started|start|keep|been) (?:to )?" + _W2 +
            r"(?:hurt|hurting|harm|harming|cut|cutting|burn|burning|starve|starving) my ?self\b",
            r"\bend(?:ing)? (?:my (?:own )?life|it all)\b",
            r"\btake my (?:own )?life\b",
            r"\b(?:want|wanna|wanted|ready|deserve|need|wish i could|just want) (?:to )?die\b"
            r"(?! on (?:this|that) hill| of (?:laughter|embarrassment|boredom)| laughing)",
            r"\bi wish i (?:was|were) (?:dead|never born)\b",
            r"\bi wish i (?:had never been born|wasn't born|didn't exist)\b",
            r"\bbetter off dead\b",
            r"\bbetter off without me\b",
            r"\b(?:don't|dont|do not) want to (?:be alive|exist|live)(?: any ?more)?\b"
            r"(?! (?:in|with|at|there|here|like|near|on|for|under|alone)\b)",
            r"\b(?:don't|dont|do not) want to be here any ?more\b",
            r"\bno (?:reason|point) (?:to|in) (?:live|living|go on|going on|being alive|"
            r"carry on|carrying on|stay alive|staying alive)\b",
            r"\b(?:sleep|go to sleep|fall asleep) and (?:never|not) wake up\b",
            r"\bnever wake up again\b",
            r"\bwon't be (?:around|here|alive) (?:much longer|for long|tomorrow|next week)\b",
            r"\b(?:writing|wrote|written|write) (?:my |a )?(?:suicide|goodbye) (?:note|letter)s?\b",
            r"\b(?:overdose|od) on\b",
            r"\b(?:swallow|take|took|taking) all (?:of )?(?:my |the |these |those )?pills\b",
            r"\bjump (?:off|from) (?:a|the|this) (?:bridge|roof|building|cliff|balcony)\b",
            r"\bslit(?:ting)? my wrists?\b",
            r"\b(?:want|wanna) to disappear (?:forever|for good)\b",
            # Someone else at risk: "my friend wants to kill herself".
            r"\b(?:kill|killing|hang|hanging|hurt|hurting|cut|cutting) "
            r"(?:him|her|them) ?sel(?:f|ves)\b",
            r"\bend (?:his|her|their) (?:own )?life\b",
        ),
        "danger": (
            r"\b" + _EN_PEOPLE + " " + _W2 + r"(?:is |keeps |has been |was |'s |s |started )?"
            r"(?:hitting|beating|hurting|choking|strangling|abusing|raping|molesting) me\b",
            r"\b" + _EN_PEOPLE + r" (?:hit|hits|beat|beats|choked|chokes|raped|abused) me\b",
            r"\bi(?:'m| am|m) (?:not safe|in danger|being abused|being hurt|scared for my life|"
            r"afraid for my life|being followed)\b",
            r"\bthreaten(?:ed|ing|s)? to (?:kill|hurt|stab|shoot) me\b",
            r"\b(?:has|got|is holding) a (?:gun|knife)\b" + _W3 + r"\bme\b",
            r"\b(?:sexually|physically) abused\b",
        ),
        "uncertain": (
            r"\bhopeless\b",
            r"\bcan't (?:go on|take (?:it|this) any ?more|do this any ?more)\b",
            r"\bwhat's the point (?:of|in) (?:living|anything|life|going on)\b",
            r"\btired of (?:living|life|being alive|everything)\b",
            r"\bnobody would (?:care|notice|miss me)\b",
            r"\bi(?:'m| am|m) a burden\b",
            r"\bgiv(?:e|ing) up on (?:life|everything)\b",
            r"\b(?:going|gonna|trying) to kill me\b",
            r"\bwant (?:it|everything) (?:all )?to (?:end|stop)\b",
            r"\bgiving away (?:all )?my (?:stuff|things|belongings)\b",
        ),
    },
    "zh": {
        "self_harm": (
            r"自[杀殺]",
            r"想死(?![你您我他她它大])",
            r"不想活",
            r"活不下去",
            r"活[着著]?(?:没|沒|没有|沒有)(?:意思|意义|意義)",
            r"(?:结束|結束)(?:自己的|我的)?(?:生命|一切)",
            r"[轻輕]生",
            r"割腕",
            r"自[残殘]",
            r"跳[楼樓]",
            r"[寻尋]死",
            r"上吊",
            r"(?:伤害|傷害)自己",
            r"不想(?:再)?(?:醒来|醒來)",
            r"(?:离开|離開)(?:这个|這個)世界",
            r"(?:没有|沒有)我[^。！？\n]{0,8}(?:会|會)?更好",
            r"[遗遺][书書]",
            r"(?:吃|吞)(?:了)?(?:一整瓶|一瓶|很多|所有的?|全部的?)(?:安眠)?[药藥]",
        ),
        "danger": (
            r"(?:他|她|有人|我爸|我妈|我媽|我老公|我丈夫|男朋友|女朋友|我继父|我繼父)"
            r"(?:一直|总是|總是|又|在|经常|經常)?(?:打|殴打|毆打|虐待|威胁|威脅|强奸|強姦)我"
            r"(?!电话|電話|手机|手機|的电话|的電話)",
            r"家暴",
            r"我(?:现在|現在)?(?:很)?(?:不安全|有危险|有危險)",
            r"被(?:强奸|強姦|性侵|虐待|家暴)",
        ),
        "uncertain": (
            r"[绝絕]望",
            r"[撑撐]不下去",
            r"活[着著]好累",
            r"(?:要|想)?[杀殺]了我",
            r"救救我",
            r"想消失",
            r"(?:没有|沒有)人(?:会|會)(?:在乎|想念)我",
        ),
    },
    "de": {
        "self_harm": (
            r"\bich " + _W3 + r"mich (?:selbst )?(?:umbringen|toten|ritzen|verletzen|"
            r"umzubringen|zu toten|zu ritzen|zu verletzen)\b",
            r"\bselbstmord",
            r"\bsuizid",
            r"\bselbstverletz",
            r"\b(?:will|mochte|wurde am liebsten|wunschte ich konnte) " + _W2 + r"sterben\b",
            r"\b(?:will|mochte|kann) " + _W2 + r"nicht mehr leben\b",
            r"\bnicht mehr leben (?:will|mochte|wollen)\b",
            r"\bmein(?:em)? leben (?:ein ende setzen|beenden)\b",
            r"\bbesser dran ohne mich\b",
            r"\bohne mich besser dran\b",
            r"\bkeinen sinn mehr (?:zu leben|im leben|weiterzuleben)\b",
            r"\bmir (?:etwas|was) (?:an)?(?:zu)?tun\b",
            r"\babschiedsbrief",
            r"\beinschlafen und nicht mehr aufwachen\b",
            r"\bnicht mehr aufwachen (?:will|mochte)\b",
            r"\balle (?:meine )?tabletten (?:nehmen|schlucken)\b",
            r"\bvon (?:der|einer) brucke springen\b",
            r"\b(?:will|mochte|wird|droht|versucht),? sich (?:selbst )?(?:umbringen|umzubringen|"
            r"toten|zu toten|ritzen|zu ritzen|das leben (?:zu )?nehmen)\b",
        ),
        "danger": (
            r"\b(?:er|sie|jemand|mein (?:vater|mann|freund|stiefvater|bruder|onkel)|"
            r"meine (?:mutter|frau|freundin))(?: [\w']{1,24}){0,2} "
            r"(?:schlagt|verprugelt|bedroht|missbraucht|vergewaltigt|wurgt)(?: [\w']{1,24}){0,2}"
            r" mich\b",
            r"\bich bin in gefahr\b",
            r"\bich habe angst um mein leben\b",
            r"\bdroht,? mich (?:umzubringen|zu toten|zu schlagen)\b",
            r"\bhausliche gewalt\b",
        ),
        "uncertain": (
            r"\bhoffnungslos\b",
            r"\bich kann nicht mehr\b",
            r"\bhat (?:alles )?keinen sinn mehr\b",
            r"\bnicht mehr (?:da|hier) sein\b",
            r"\bich bin (?:allen|nur) eine last\b",
            r"\bwird mich umbringen\b",
        ),
    },
    "es": {
        "self_harm": (
            r"\bsuicid(?:arme|io|arse|arte|a)\b",
            r"\b(?:quiero|voy a|pienso|pienso en|quisiera|deseo|necesito|tengo ganas de) " + _W2 +
            r"(?:matarme|suicidarme|quitarme la vida|acabar con mi vida)\b",
            r"\b(?:quiero|quisiera|deseo|prefiero) (?:\w+ ){0,2}morir(?:me)?\b"
            r"(?! de (?:risa|hambre|sueno|verguenza|calor|frio))",
            r"\bno quiero (?:seguir )?viv(?:ir|iendo)\b(?! (?:en|con|aqui|alli|asi|sola?)\b)",
            r"\bno quiero (?:volver a )?despertar(?:me)?\b",
            r"\bquitarme la vida\b",
            r"\bacabar con mi vida\b",
            r"\bhacerme dano\b",
            r"\b(?:quiero|voy a|necesito|volvi a|sigo) cortarme\b"
            r"(?! el (?:pelo|cabello)| las unas)",
            r"\bestar(?:ian|ia|an) mejor sin mi\b",
            r"\bmejor sin mi\b",
            r"\bno vale la pena vivir\b",
            r"\bno tengo (?:razones|motivos|ganas|ninguna razon) (?:para|de) vivir\b",
            r"\bcarta de despedida\b",
            r"\btirarme (?:de|por|desde) (?:un|el|la|una) (?:puente|edificio|ventana|balcon)\b",
            r"\bautolesion",
            r"\bdormirme y no despertar\b",
            r"\b(?:quiere|va a|intento|piensa en|amenaza con) (?:matarse|quitarse la vida)\b",
        ),
        "danger": (
            r"\b(?:me|nos) (?:esta|sigue) (?:pegando|golpeando|amenazando|violando|maltratando)\b",
            r"\b(?:mi (?:padre|papa|madre|mama|pareja|esposo|marido|novio|novia|padrastro)|el|ella|"
            r"alguien) me (?:pega|golpea|maltrata|viola|amenaza)\b",
            r"\bme amenaz(?:a|o|aron|aba|an) con matarme\b",
            r"\bestoy en peligro\b",
            r"\btengo miedo por mi vida\b",
            r"\babusa(?:n|ndo|ron)? de mi\b",
            r"\bviolencia (?:domestica|de genero)\b",
        ),
        "uncertain": (
            r"\bsin esperanza\b",
            r"\bno puedo mas\b",
            r"\bya no aguanto\b",
            r"\bsoy una carga\b",
            r"\bnadie me (?:extranaria|echaria de menos)\b",
            r"\bme va a matar\b",
            r"\bquiero desaparecer\b",
        ),
    },
    "ja": {
        "self_harm": (
            r"死にたい",
            r"(?:しにたい|シニタイ|氏にたい|タヒにたい)",  # kana and look-alike spellings
            r"(?:きえたい|キエタイ)",
            r"自殺",
            r"消えたい",
            r"生きていたくない",
            r"生きたくない",
            r"生きる(?:の|こと)?(?:に|が)?(?:意味|価値)(?:が|は)?(?:ない|無い)",
            r"命を(?:絶|断)",
            r"自傷",
            r"リスカ",
            r"リストカット",
            r"手首を切",
            r"飛び降り(?:たい|る|よう|自殺)",
            r"首を(?:吊|つ)",
            r"いなくなりたい",
            r"死んだ(?:ほう|方)が(?:まし|マシ|いい|楽)",
            r"遺書",
            r"(?:私|僕|俺|わたし|ぼく|おれ)が?いない(?:ほう|方)が(?:みんな)?(?:幸せ|いい)",
            r"目が覚めなければ",
            r"薬を(?:全部|たくさん|大量に)飲",
        ),
        "danger": (
            r"(?:殴られ|蹴られ|暴力を(?:振る|ふる)われ|虐待され|レイプされ)",
            r"(?:夫|彼氏|父|母|親|義父)(?:に|が)(?:殴|暴力)",
            r"身の危険",
            r"(?:命|いのち)が危ない",
            r"(?<![a-z])dv(?![a-z])",
        ),
        "uncertain": (
            r"楽になりたい",
            r"もう無理",
            r"生きるのが(?:つらい|辛い|しんどい)",
            r"殺される",
            r"助けて",
            r"絶望",
        ),
    },
}
