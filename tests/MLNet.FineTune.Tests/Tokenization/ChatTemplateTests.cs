using MLNet.FineTune.Tokenization;

namespace MLNet.FineTune.Tests.Tokenization;

/// <summary>
/// Real chat templates (Fixtures/chat-templates, provenance in its NOTE.md) rendered as transformers'
/// apply_chat_template renders them; each expected string was derived by reading the template's source.
/// </summary>
[TestClass]
public sealed class ChatTemplateTests
{
    private static readonly ChatMessage[] Conversation =
    [
        new("system", "You are a terse assistant."),
        new("user", "Hi there!  "),
        new("assistant", "Hello. How can I help?"),
        new("user", "Name a colour."),
    ];

    private static ChatTemplate Load(string name) => ChatTemplate.FromFolder(TestPaths.Fixture("chat-templates", name));

    private static void AssertRenders(string expected, string actual, string what)
    {
        Console.WriteLine($"{what}:\n{actual.Replace("\n", "\\n\n")}");
        Assert.AreEqual(expected, actual, what);
    }

    [TestMethod]
    public void Llama3TrimsEachContentAndStartsWithBos()
    {
        // '<|start_header_id|>' + role + '<|end_header_id|>\n\n' + (content | trim) + '<|eot_id|>': the filter binds to the
        // content only; bos_token is prepended at loop.index0 == 0; the generation prompt is the assistant header.
        var template = Load("llama3");
        const string turns =
            "<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nYou are a terse assistant.<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nHi there!<|eot_id|>" +
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello. How can I help?<|eot_id|>" +
            "<|start_header_id|>user<|end_header_id|>\n\nName a colour.<|eot_id|>";
        AssertRenders(turns, template.Apply(Conversation), "llama3");
        AssertRenders(turns + "<|start_header_id|>assistant<|end_header_id|>\n\n", template.Apply(Conversation, addGenerationPrompt: true), "llama3 + generation prompt");
    }

    [TestMethod]
    public void Qwen2AddsItsDefaultSystemPromptOnlyWithoutASystemTurn()
    {
        var template = Load("qwen2");
        Assert.IsFalse(template.SpecialTokens.ContainsKey("bos_token"), "Qwen2's bos_token is null");
        AssertRenders(
            "<|im_start|>system\nYou are a terse assistant.<|im_end|>\n" +
            "<|im_start|>user\nHi there!  <|im_end|>\n" +
            "<|im_start|>assistant\nHello. How can I help?<|im_end|>\n" +
            "<|im_start|>user\nName a colour.<|im_end|>\n" +
            "<|im_start|>assistant\n",
            template.Apply(Conversation, addGenerationPrompt: true), "qwen2 with a system turn");
        AssertRenders(
            "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n",
            template.Apply([new("user", "Hello")]), "qwen2 without a system turn");
    }

    [TestMethod]
    public void MixtralAlternatesInstBlocksAndRefusesOtherRoles()
    {
        var template = Load("mixtral");
        AssertRenders(
            "<s>[INST] Hi there!   [/INST]Hello. How can I help?</s>[INST] Name a colour. [/INST]",
            template.Apply(Conversation[1..]), "mixtral");
        // The template's own raise_exception calls become named errors carrying its message.
        NamedErrors.Expect<InvalidOperationException>(() => template.Apply(Conversation), "Conversation roles must alternate", "chat_template");
        NamedErrors.Expect<InvalidOperationException>(() => template.Apply([new("system", "a")]), "Conversation roles must alternate");
        NamedErrors.Expect<InvalidOperationException>(() => template.Apply([new("user", "a"), new("user", "b")]), "Conversation roles must alternate");
        // A non-user role in an assistant slot passes the alternation check and reaches the else branch.
        NamedErrors.Expect<InvalidOperationException>(() => template.Apply([new("user", "a"), new("tool", "b")]), "Only user and assistant roles are supported!");
        NamedErrors.Expect<InvalidOperationException>(() => template.Apply([new("user", "a"), new("system", "b")]), "Only user and assistant roles are supported!");
    }

    [TestMethod]
    public void ZephyrsNewlinesBetweenTagsFollowTrimBlocks()
    {
        // Each tag sits on its own line: trim_blocks drops the newline after every {% %}, while the newline after each
        // {{ }} stays, so every turn ends in "</s>\n" and the generation prompt is "<|assistant|>\n".
        var template = Load("zephyr");
        const string turns =
            "<|system|>\nYou are a terse assistant.</s>\n" +
            "<|user|>\nHi there!  </s>\n" +
            "<|assistant|>\nHello. How can I help?</s>\n" +
            "<|user|>\nName a colour.</s>\n";
        AssertRenders(turns, template.Apply(Conversation), "zephyr");
        AssertRenders(turns + "<|assistant|>\n", template.Apply(Conversation, addGenerationPrompt: true), "zephyr + generation prompt");
    }

    [TestMethod]
    public void MessagesAsJsonKeepExtraFields()
    {
        var template = ChatTemplate.Parse("{% for m in messages %}{{ m.role }}:{{ m.content }}{% if m.name is defined %}({{ m.name }}){% endif %};{% endfor %}");
        Assert.AreEqual("user:hi(ann);assistant:yo;",
            template.ApplyJson("""[{"role": "user", "content": "hi", "name": "ann"}, {"role": "assistant", "content": "yo"}]"""));
        NamedErrors.Expect<FormatException>(() => template.ApplyJson("""{"role": "user"}"""), "JSON array");
        NamedErrors.Expect<FormatException>(() => template.ApplyJson("""[{"content": "x"}]"""), "message 0", "\"role\"");
        NamedErrors.Expect<FormatException>(() => template.ApplyJson("[]"), "empty");
        NamedErrors.Expect<FormatException>(() => template.ApplyJson("[{"), "not valid JSON");
    }

    [TestMethod]
    [DataRow("{% set ns = namespace(n=0, last='') %}{% for m in messages %}{% set ns.n = ns.n + 1 %}{% set ns.last = m.role %}{% endfor %}{{ ns.n }} {{ ns.last }}", "2 assistant")]
    [DataRow("{% set x = 1 %}{% for m in messages %}{% set x = 5 %}{% endfor %}{{ x }}", "1")]   // loops do not leak assignments
    [DataRow("{{ 'abcdef'[1:4] }}|{{ 'abc'[::-1] }}|{{ [1, 2, 3][-1] }}|{{ messages[1:][0].role }}|{{ 'abc'[-2:] }}", "bcd|cba|3|assistant|bc")]
    [DataRow("{% for x in [10, 20, 30] %}{{ loop.index0 }}{{ loop.index }}{% if loop.first %}F{% endif %}{% if not loop.last %},{% endif %}{% endfor %}", "01F,12,23")]
    [DataRow("{% for x in [1, 2, 3, 4] if x is even %}{{ x }}{{ loop.length }}{% else %}none{% endfor %}|{% for x in [] %}x{% else %}empty{% endfor %}", "2242|empty")]
    [DataRow("{{ x is defined }} {{ y is defined }} {{ y | default('d') }} {{ none is none }} {{ 'a' is string }} {{ 3 is number }}", "False False d True True True")]
    [DataRow("{{ '  hi \n' | trim }}|{{ messages | length }}|{{ 'ab' | upper }}|{{ 'hello world' | title }}|{{ [3, 1] | join('-') }}", "hi|2|AB|Hello World|3-1")]
    [DataRow("{{ 'a' ~ 1 ~ none }}|{{ 'a' + 'b' }}|{{ 7 // 2 }} {{ 7 % 3 }} {{ 2 * 3 }} {{ 1 / 2 }} {{ -3 }}|{{ 'x' * 3 }}", "a1None|ab|3 1 6 0.5 -3|xxx")]
    [DataRow("{{ 'yes' if messages[0].role == 'user' else 'no' }}|{{ 'a' in 'cat' }} {{ 'z' not in ['a'] }} {{ 'role' in messages[0] }}", "yes|True True True")]
    [DataRow("{{ [1, 'a', true, none] | tojson }}|{{ {'k': 'v\"'} | tojson }}|{{ messages[0] | tojson }}", "[1, \"a\", true, null]|{\"k\": \"v\\\"\"}|{\"role\": \"user\", \"content\": \"Hi\"}")]
    [DataRow("{{ messages[0]['content'].strip().lower() }}|{{ 'a,b'.split(',') }}|{{ 'abc'.startswith('ab') }}|{{ messages[0].get('x', 'dflt') }}", "hi|['a', 'b']|True|dflt")]
    [DataRow("{% for k, v in {'a': 1, 'b': 2}.items() %}{{ k }}={{ v }};{% endfor %}|{{ messages | selectattr('role', 'equalto', 'user') | list | length }}|{{ messages | map(attribute='role') | join(',') }}", "a=1;b=2;|1|user,assistant")]
    [DataRow("{% for x in range(5) %}{% if x == 1 %}{% continue %}{% endif %}{% if x == 3 %}{% break %}{% endif %}{{ x }}{% endfor %}", "02")]
    [DataRow("{% set block %}in{{ 1 + 1 }}{% endset %}[{{ block }}]{# a comment #}", "[in2]")]
    [DataRow("{%- if true %}\n  a\n{%- endif %}|x\n    {% if true %}y{% endif %}\n|{%+ if true %}z{% endif %}", "  a|x\ny|z")]
    [DataRow("{{ \"it's\" }}|{{ 'a\\tb' }}|{% generation %}{{ 'g' }}{% endgeneration %}|{{ 'a' 'b' }}", "it's|a\tb|g|ab")]
    public void JinjaSubsetMatchesJinjaSemantics(string source, string expected)
    {
        var template = ChatTemplate.Parse(source);
        var rendered = template.Apply([new("user", "Hi"), new("assistant", "Hello")]);
        Console.WriteLine($"{source}\n  -> {rendered}");
        Assert.AreEqual(expected, rendered);
    }

    [TestMethod]
    public void AbsentTemplateAndBadSyntaxAreNamedErrors()
    {
        var folder = Directory.CreateTempSubdirectory("mlft-chat-").FullName;
        try
        {
            File.WriteAllText(Path.Combine(folder, "tokenizer_config.json"), """{"bos_token": "<s>"}""");
            Assert.IsNull(ChatTemplate.TryFromFolder(folder));
            NamedErrors.Expect<InvalidOperationException>(() => ChatTemplate.FromFolder(folder), folder, "no chat template", "\"chat_template\"", ChatTemplate.ChatTemplateFile);
            // chat_template.jinja beside the config wins, as in transformers 4.43 and later.
            File.WriteAllText(Path.Combine(folder, ChatTemplate.ChatTemplateFile), "{{ bos_token }}{{ messages[0].content }}\n");
            Assert.AreEqual("<s>x", ChatTemplate.FromFolder(folder).Apply([new("user", "x")]), "one trailing newline of the template is dropped");
        }
        finally { Directory.Delete(folder, recursive: true); }

        NamedErrors.Expect<InvalidDataException>(() => ChatTemplate.Parse("{% if x %}open", origin: "test template"), "test template", "line 1", "endif");
        NamedErrors.Expect<InvalidDataException>(() => ChatTemplate.Parse("a\n{% macro f() %}{% endmacro %}", origin: "test template"), "line 2", "'macro' is not supported");
        NamedErrors.Expect<InvalidDataException>(() => ChatTemplate.Parse("{{ x | frobnicate }}"), "filter 'frobnicate'");
        NamedErrors.Expect<InvalidOperationException>(() => ChatTemplate.Parse("{{ nothing.content }}").Apply([new("user", "a")]), "'nothing' is undefined");
        NamedErrors.Expect<InvalidOperationException>(() => ChatTemplate.Parse("{{ 'a' + 1 }}").Apply([new("user", "a")]), "unsupported operand");
    }
}
