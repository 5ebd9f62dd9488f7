using System.Globalization;
using System.Text;
using System.Text.Json;

namespace MLNet.FineTune.Tokenization;

/// <summary>
/// The subset of Jinja2 that Hugging Face chat templates use, rendered as transformers renders them
/// (<c>ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)</c> with the loop-controls extension):
/// text, <c>{{ }}</c>, <c>{% if/elif/else %}</c>, <c>{% for %}</c> (tuple targets, <c>if</c> filters, <c>else</c>,
/// <c>loop.*</c>, break/continue), <c>{% set %}</c> (names, namespace attributes, blocks), <c>{% generation %}</c>,
/// comments, whitespace control (<c>-</c>, <c>+</c>), Python-like values, slicing, string/dict methods, and the filters
/// and tests the templates of Llama 3, Qwen2, Mistral, Zephyr and similar models call.
/// </summary>
/// <remarks>Values: null (Python None), bool, long, double, string, <see cref="List{T}"/> of object?, and
/// <see cref="Dictionary{TKey, TValue}"/> string → object? (insertion-ordered, as Python dicts).</remarks>
internal sealed class JinjaTemplate
{
    private readonly List<Node> _body;
    private readonly string _origin;

    private JinjaTemplate(List<Node> body, string origin) { _body = body; _origin = origin; }

    /// <summary>Parses a template; <paramref name="origin"/> names it in errors (e.g. "chat_template in tokenizer_config.json").</summary>
    /// <exception cref="InvalidDataException">The template is not valid Jinja, or uses a statement outside the subset.</exception>
    public static JinjaTemplate Parse(string source, string origin)
    {
        ArgumentNullException.ThrowIfNull(source);
        var parser = new Parser(Lexer.Tokenize(source, origin), origin);
        return new JinjaTemplate(parser.ParseTemplate(), origin);
    }

    /// <summary>Renders with the given variables (and the globals raise_exception, namespace, range, dict, strftime_now).</summary>
    /// <exception cref="InvalidOperationException">The template called raise_exception, or failed on the values (names the cause).</exception>
    public string Render(IReadOnlyDictionary<string, object?> variables)
    {
        var context = new Context(variables, _origin);
        var output = new StringBuilder();
        try { Node.RenderAll(_body, context, output); }
        catch (LoopControl) { throw new InvalidOperationException($"{_origin}: break/continue outside a loop."); }
        return output.ToString();
    }

    // ---------------------------------------------------------------- lexer

    private enum TokenKind { Text, VarStart, BlockStart, End, Name, String, Integer, Float, Operator, EndOfInput }

    private readonly record struct Token(TokenKind Kind, string Value, int Line);

    private static class Lexer
    {
        private static readonly string[] Operators =
            ["//", "**", "==", "!=", "<=", ">=", "+", "-", "*", "/", "%", "~", "<", ">", "=", "(", ")", "[", "]", "{", "}", ",", ".", ":", "|"];

        private sealed class Segment
        {
            public required char Kind;            // 'T' text, 'V' {{ }}, 'B' {% %}, 'C' {# #}
            public string Text = "";
            public List<Token> Tokens = [];
            public bool StripBefore, StripAfter, KeepBefore;
            public bool AtLineStart;
            public int Line;
        }

        public static List<Token> Tokenize(string source, string origin)
        {
            // Jinja's keep_trailing_newline=False: one trailing newline of the template is dropped.
            if (source.EndsWith("\r\n", StringComparison.Ordinal)) source = source[..^2];
            else if (source.EndsWith('\n')) source = source[..^1];

            var segments = new List<Segment>();
            int pos = 0, line = 1;
            while (pos < source.Length)
            {
                int next = FindTagStart(source, pos);
                if (next > pos || next < 0)
                {
                    int end = next < 0 ? source.Length : next;
                    segments.Add(new Segment { Kind = 'T', Text = source[pos..end], AtLineStart = pos == 0 || source[pos - 1] == '\n', Line = line });
                    line += Count(source, pos, end, '\n');
                    pos = end;
                    if (next < 0) break;
                }
                char kind = source[pos + 1] switch { '{' => 'V', '%' => 'B', _ => 'C' };
                var segment = new Segment { Kind = kind, Line = line };
                pos += 2;
                if (pos < source.Length && source[pos] == '-') { segment.StripBefore = true; pos++; }
                else if (pos < source.Length && source[pos] == '+') { segment.KeepBefore = true; pos++; }
                if (kind == 'C')
                {
                    int close = source.IndexOf("#}", pos, StringComparison.Ordinal);
                    if (close < 0) throw Error(origin, line, "a comment {# is never closed");
                    segment.StripAfter = close > pos && source[close - 1] == '-';
                    line += Count(source, pos, close, '\n');
                    pos = close + 2;
                }
                else
                {
                    string closer = kind == 'V' ? "}}" : "%}";
                    pos = LexInside(source, pos, closer, segment, origin, ref line);
                }
                segments.Add(segment);
            }
            ApplyWhitespaceControl(segments);

            var tokens = new List<Token>();
            foreach (var s in segments)
            {
                switch (s.Kind)
                {
                    case 'T': if (s.Text.Length > 0) tokens.Add(new Token(TokenKind.Text, s.Text, s.Line)); break;
                    case 'V': tokens.Add(new Token(TokenKind.VarStart, "{{", s.Line)); tokens.AddRange(s.Tokens); tokens.Add(new Token(TokenKind.End, "}}", s.Line)); break;
                    case 'B': tokens.Add(new Token(TokenKind.BlockStart, "{%", s.Line)); tokens.AddRange(s.Tokens); tokens.Add(new Token(TokenKind.End, "%}", s.Line)); break;
                }
            }
            tokens.Add(new Token(TokenKind.EndOfInput, "", line));
            return tokens;
        }

        private static int FindTagStart(string s, int from)
        {
            for (int i = s.IndexOf('{', from); i >= 0 && i + 1 < s.Length; i = s.IndexOf('{', i + 1))
                if (s[i + 1] is '{' or '%' or '#') return i;
            return -1;
        }

        private static int Count(string s, int start, int end, char c)
        {
            int n = 0;
            for (int i = start; i < end; i++) if (s[i] == c) n++;
            return n;
        }

        /// <summary>Tokens of an expression or statement up to its closing delimiter (which may carry '-').</summary>
        private static int LexInside(string s, int pos, string closer, Segment segment, string origin, ref int line)
        {
            while (true)
            {
                while (pos < s.Length && char.IsWhiteSpace(s[pos])) { if (s[pos] == '\n') line++; pos++; }
                if (pos >= s.Length) throw Error(origin, segment.Line, $"a tag is never closed with {closer}");
                if (string.CompareOrdinal(s, pos, closer, 0, 2) == 0) return pos + 2;
                if (s[pos] is '-' or '+' && string.CompareOrdinal(s, pos + 1, closer, 0, 2) == 0)
                {
                    segment.StripAfter = s[pos] == '-';
                    return pos + 3;
                }
                char c = s[pos];
                if (c is '\'' or '"')
                {
                    var text = new StringBuilder();
                    int i = pos + 1;
                    for (; i < s.Length && s[i] != c; i++)
                    {
                        if (s[i] == '\\' && i + 1 < s.Length)
                        {
                            i++;
                            text.Append(s[i] switch { 'n' => '\n', 't' => '\t', 'r' => '\r', '\\' => '\\', '\'' => '\'', '"' => '"', var other => other });
                            if (s[i] is not ('n' or 't' or 'r' or '\\' or '\'' or '"')) text.Insert(text.Length - 1, '\\');
                        }
                        else text.Append(s[i]);
                    }
                    if (i >= s.Length) throw Error(origin, line, "a string literal is never closed");
                    segment.Tokens.Add(new Token(TokenKind.String, text.ToString(), line));
                    pos = i + 1;
                }
                else if (char.IsDigit(c))
                {
                    int i = pos;
                    while (i < s.Length && (char.IsDigit(s[i]) || s[i] == '_')) i++;
                    bool isFloat = i + 1 < s.Length && s[i] == '.' && char.IsDigit(s[i + 1]);
                    if (isFloat) { i++; while (i < s.Length && char.IsDigit(s[i])) i++; }
                    segment.Tokens.Add(new Token(isFloat ? TokenKind.Float : TokenKind.Integer, s[pos..i].Replace("_", ""), line));
                    pos = i;
                }
                else if (char.IsLetter(c) || c == '_')
                {
                    int i = pos;
                    while (i < s.Length && (char.IsLetterOrDigit(s[i]) || s[i] == '_')) i++;
                    segment.Tokens.Add(new Token(TokenKind.Name, s[pos..i], line));
                    pos = i;
                }
                else
                {
                    var op = Operators.FirstOrDefault(o => string.CompareOrdinal(s, pos, o, 0, o.Length) == 0)
                        ?? throw Error(origin, line, $"unexpected character '{c}'");
                    segment.Tokens.Add(new Token(TokenKind.Operator, op, line));
                    pos += op.Length;
                }
            }
        }

        /// <summary>'-' strips all whitespace on that side; trim_blocks drops the newline after a block or comment;
        /// lstrip_blocks drops spaces and tabs before a block or comment that starts a line (unless '+').</summary>
        private static void ApplyWhitespaceControl(List<Segment> segments)
        {
            for (int i = 0; i < segments.Count; i++)
            {
                var s = segments[i];
                if (s.Kind == 'T') continue;
                var before = i > 0 && segments[i - 1].Kind == 'T' ? segments[i - 1] : null;
                var after = i + 1 < segments.Count && segments[i + 1].Kind == 'T' ? segments[i + 1] : null;
                bool isBlock = s.Kind is 'B' or 'C';
                if (before is not null)
                {
                    if (s.StripBefore) before.Text = before.Text.TrimEnd();
                    else if (isBlock && !s.KeepBefore)
                    {
                        int lineStart = before.Text.LastIndexOf('\n') + 1;
                        if ((lineStart > 0 || before.AtLineStart) && before.Text.AsSpan(lineStart).Trim(" \t").IsEmpty)
                            before.Text = before.Text[..lineStart];
                    }
                }
                if (after is not null)
                {
                    if (s.StripAfter)
                    {
                        var trimmed = after.Text.TrimStart();
                        if (trimmed.Length < after.Text.Length) after.AtLineStart = after.Text[after.Text.Length - trimmed.Length - 1] == '\n';
                        after.Text = trimmed;
                    }
                    else if (isBlock)
                    {
                        if (after.Text.StartsWith('\n')) { after.Text = after.Text[1..]; after.AtLineStart = true; }
                        else if (after.Text.StartsWith("\r\n", StringComparison.Ordinal)) { after.Text = after.Text[2..]; after.AtLineStart = true; }
                    }
                }
            }
        }
    }

    private static InvalidDataException Error(string origin, int line, string message) =>
        new($"{origin}, line {line}: {message}.");

    // ---------------------------------------------------------------- parser

    private sealed class Parser(List<Token> tokens, string origin)
    {
        private int _pos;

        private Token Peek(int ahead = 0) => tokens[Math.Min(_pos + ahead, tokens.Count - 1)];
        private Token Next() => tokens[_pos++];
        private bool IsOp(string op, int ahead = 0) => Peek(ahead) is { Kind: TokenKind.Operator } t && t.Value == op;
        private bool IsName(string name, int ahead = 0) => Peek(ahead) is { Kind: TokenKind.Name } t && t.Value == name;
        private InvalidDataException Fail(string message) => Error(origin, Peek().Line, message);

        private void ExpectOp(string op)
        {
            if (!IsOp(op)) throw Fail($"expected '{op}' but found '{Peek().Value}'");
            _pos++;
        }

        private string ExpectName()
        {
            if (Peek().Kind != TokenKind.Name) throw Fail($"expected a name but found '{Peek().Value}'");
            return Next().Value;
        }

        private void ExpectEnd()
        {
            if (Peek().Kind != TokenKind.End) throw Fail($"expected the end of the tag but found '{Peek().Value}'");
            _pos++;
        }

        public List<Node> ParseTemplate()
        {
            var body = ParseBody(out var stop);
            if (stop is not null) throw Fail($"unexpected '{{% {stop} %}}'");
            return body;
        }

        /// <summary>Nodes until a block tag whose keyword is in <paramref name="stops"/> (left unconsumed after its name).</summary>
        private List<Node> ParseBody(out string? stoppedAt, params string[] stops)
        {
            var nodes = new List<Node>();
            while (true)
            {
                var t = Peek();
                switch (t.Kind)
                {
                    case TokenKind.EndOfInput:
                        if (stops.Length > 0) throw Fail($"the template ends inside a block: expected {string.Join(" or ", stops.Select(s => "{% " + s + " %}"))}");
                        stoppedAt = null;
                        return nodes;
                    case TokenKind.Text:
                        nodes.Add(new TextNode(Next().Value));
                        break;
                    case TokenKind.VarStart:
                        _pos++;
                        nodes.Add(new OutputNode(ParseExpression()));
                        ExpectEnd();
                        break;
                    case TokenKind.BlockStart:
                        var keyword = Peek(1).Value;
                        if (stops.Contains(keyword)) { _pos += 2; stoppedAt = keyword; return nodes; }
                        _pos += 2;
                        nodes.Add(ParseStatement(keyword));
                        break;
                    default:
                        throw Fail($"unexpected '{t.Value}'");
                }
            }
        }

        private Node ParseStatement(string keyword)
        {
            switch (keyword)
            {
                case "if": return ParseIf();
                case "for": return ParseFor();
                case "set": return ParseSet();
                case "break": ExpectEnd(); return new LoopControlNode(Break: true);
                case "continue": ExpectEnd(); return new LoopControlNode(Break: false);
                case "generation":
                {
                    ExpectEnd();
                    var body = ParseBody(out _, "endgeneration");
                    ExpectEnd();
                    return new SequenceNode(body);
                }
                default:
                    throw Fail($"the statement '{keyword}' is not supported by this chat-template renderer");
            }
        }

        private Node ParseIf()
        {
            var branches = new List<(Expr, List<Node>)>();
            List<Node>? otherwise = null;
            var condition = ParseExpression();
            ExpectEnd();
            while (true)
            {
                var body = ParseBody(out var stop, "elif", "else", "endif");
                branches.Add((condition, body));
                if (stop == "elif") { condition = ParseExpression(); ExpectEnd(); continue; }
                if (stop == "else")
                {
                    ExpectEnd();
                    otherwise = ParseBody(out _, "endif");
                }
                ExpectEnd();
                return new IfNode(branches, otherwise);
            }
        }

        private Node ParseFor()
        {
            var targets = new List<string> { ExpectName() };
            while (IsOp(",")) { _pos++; targets.Add(ExpectName()); }
            if (!IsName("in")) throw Fail("expected 'in' in a for loop");
            _pos++;
            var iterable = ParseExpression(allowConditional: false);
            Expr? filter = null;
            if (IsName("if")) { _pos++; filter = ParseExpression(allowConditional: false); }
            if (IsName("recursive")) throw Fail("recursive loops are not supported");
            ExpectEnd();
            var body = ParseBody(out var stop, "else", "endfor");
            List<Node>? otherwise = null;
            if (stop == "else") { ExpectEnd(); otherwise = ParseBody(out _, "endfor"); }
            ExpectEnd();
            return new ForNode(targets, iterable, filter, body, otherwise);
        }

        private Node ParseSet()
        {
            var name = ExpectName();
            string? attribute = null;
            if (IsOp(".")) { _pos++; attribute = ExpectName(); }
            if (IsOp("="))
            {
                _pos++;
                var value = ParseExpression();
                ExpectEnd();
                return new SetNode(name, attribute, value, null);
            }
            if (attribute is not null) throw Fail("a block set cannot assign an attribute");
            ExpectEnd();
            var body = ParseBody(out _, "endset");
            ExpectEnd();
            return new SetNode(name, null, null, body);
        }

        // Precedence, lowest first: conditional, or, and, not, comparisons (incl. in / not in), + -, ~, * / // %, **,
        // unary - +, then primary with postfix (. [] ()) and filters / tests (|, is).
        public Expr ParseExpression(bool allowConditional = true)
        {
            var expr = ParseOr();
            if (allowConditional && IsName("if"))
            {
                _pos++;
                var condition = ParseOr();
                Expr? otherwise = null;
                if (IsName("else")) { _pos++; otherwise = ParseExpression(); }
                var then = expr;
                return new Expr(c => Values.Truthy(condition.Eval(c)) ? then.Eval(c) : otherwise is null ? Undefined.Of("else branch") : otherwise.Eval(c));
            }
            return expr;
        }

        private Expr ParseOr()
        {
            var left = ParseAnd();
            while (IsName("or"))
            {
                _pos++;
                var (l, r) = (left, ParseAnd());
                left = new Expr(c => l.Eval(c) is var a && Values.Truthy(a) ? a : r.Eval(c));
            }
            return left;
        }

        private Expr ParseAnd()
        {
            var left = ParseNot();
            while (IsName("and"))
            {
                _pos++;
                var (l, r) = (left, ParseNot());
                left = new Expr(c => l.Eval(c) is var a && !Values.Truthy(a) ? a : r.Eval(c));
            }
            return left;
        }

        private Expr ParseNot()
        {
            if (IsName("not"))
            {
                _pos++;
                var operand = ParseNot();
                return new Expr(c => !Values.Truthy(operand.Eval(c)));
            }
            return ParseCompare();
        }

        private Expr ParseCompare()
        {
            var left = ParseAdditive();
            while (true)
            {
                string? op = null;
                if (Peek().Kind == TokenKind.Operator && Peek().Value is "==" or "!=" or "<" or "<=" or ">" or ">=") op = Next().Value;
                else if (IsName("in")) { _pos++; op = "in"; }
                else if (IsName("not") && IsName("in", 1)) { _pos += 2; op = "not in"; }
                if (op is null) return left;
                var (l, r) = (left, ParseAdditive());
                left = new Expr(c => Values.Compare(op, l.Eval(c), r.Eval(c)));
            }
        }

        private Expr ParseAdditive()
        {
            var left = ParseConcat();
            while (IsOp("+") || IsOp("-"))
            {
                var op = Next().Value;
                var (l, r) = (left, ParseConcat());
                left = new Expr(c => Values.Arithmetic(op, l.Eval(c), r.Eval(c)));
            }
            return left;
        }

        private Expr ParseConcat()
        {
            var left = ParseMultiplicative();
            while (IsOp("~"))
            {
                _pos++;
                var (l, r) = (left, ParseMultiplicative());
                left = new Expr(c => Values.Str(l.Eval(c)) + Values.Str(r.Eval(c)));
            }
            return left;
        }

        private Expr ParseMultiplicative()
        {
            var left = ParsePower();
            while (Peek().Kind == TokenKind.Operator && Peek().Value is "*" or "/" or "//" or "%")
            {
                var op = Next().Value;
                var (l, r) = (left, ParsePower());
                left = new Expr(c => Values.Arithmetic(op, l.Eval(c), r.Eval(c)));
            }
            return left;
        }

        private Expr ParsePower()
        {
            var left = ParseUnary();
            while (IsOp("**"))
            {
                _pos++;
                var (l, r) = (left, ParseUnary());
                left = new Expr(c => Values.Arithmetic("**", l.Eval(c), r.Eval(c)));
            }
            return left;
        }

        private Expr ParseUnary()
        {
            if (IsOp("-") || IsOp("+"))
            {
                bool negate = Next().Value == "-";
                var operand = ParseUnary(withFilters: false);
                return ParseFiltersAndTests(new Expr(c => negate ? Values.Arithmetic("-", 0L, operand.Eval(c)) : operand.Eval(c)));
            }
            return ParseUnary(withFilters: true);
        }

        private Expr ParseUnary(bool withFilters)
        {
            var expr = ParsePostfix(ParsePrimary());
            return withFilters ? ParseFiltersAndTests(expr) : expr;
        }

        private Expr ParsePrimary()
        {
            var t = Next();
            switch (t.Kind)
            {
                case TokenKind.String:
                    var text = t.Value;
                    while (Peek().Kind == TokenKind.String) text += Next().Value;   // adjacent literals concatenate
                    return new Expr(_ => text);
                case TokenKind.Integer:
                    var integer = long.Parse(t.Value, CultureInfo.InvariantCulture);
                    return new Expr(_ => integer);
                case TokenKind.Float:
                    var number = double.Parse(t.Value, CultureInfo.InvariantCulture);
                    return new Expr(_ => number);
                case TokenKind.Name:
                    switch (t.Value)
                    {
                        case "true" or "True": return new Expr(_ => true);
                        case "false" or "False": return new Expr(_ => false);
                        case "none" or "None": return new Expr(_ => null);
                    }
                    var name = t.Value;
                    return new Expr(c => c.Lookup(name)) { Name = name };
                case TokenKind.Operator when t.Value == "(":
                    var inner = ParseExpression();
                    if (IsOp(","))
                    {
                        var items = new List<Expr> { inner };
                        while (IsOp(",")) { _pos++; if (IsOp(")")) break; items.Add(ParseExpression()); }
                        ExpectOp(")");
                        return new Expr(c => items.Select(i => i.Eval(c)).ToList());
                    }
                    ExpectOp(")");
                    return inner;
                case TokenKind.Operator when t.Value == "[":
                    var elements = new List<Expr>();
                    while (!IsOp("]")) { elements.Add(ParseExpression()); if (!IsOp(",")) break; _pos++; }
                    ExpectOp("]");
                    return new Expr(c => elements.Select(e => e.Eval(c)).ToList());
                case TokenKind.Operator when t.Value == "{":
                    var pairs = new List<(Expr Key, Expr Value)>();
                    while (!IsOp("}"))
                    {
                        var key = ParseExpression();
                        ExpectOp(":");
                        pairs.Add((key, ParseExpression()));
                        if (!IsOp(",")) break;
                        _pos++;
                    }
                    ExpectOp("}");
                    return new Expr(c =>
                    {
                        var dict = new Dictionary<string, object?>();
                        foreach (var (k, v) in pairs) dict[Values.Str(k.Eval(c))] = v.Eval(c);
                        return dict;
                    });
                default:
                    _pos--;
                    throw Fail($"unexpected '{t.Value}' in an expression");
            }
        }

        private Expr ParsePostfix(Expr expr)
        {
            while (true)
            {
                if (IsOp("."))
                {
                    _pos++;
                    var name = Peek().Kind == TokenKind.Integer ? Next().Value : ExpectName();
                    var target = expr;
                    if (IsOp("("))
                    {
                        var (args, kwargs) = ParseArguments();
                        expr = new Expr(c => Methods.Call(target.Eval(c), name, Evaluate(args, c), EvaluateNamed(kwargs, c), c));
                    }
                    else
                        expr = new Expr(c => Values.GetItem(target.Eval(c), name, c));
                }
                else if (IsOp("["))
                {
                    _pos++;
                    var target = expr;
                    Expr? start = null, stop = null, step = null;
                    bool slice = false;
                    if (!IsOp(":")) start = ParseExpression();
                    if (IsOp(":"))
                    {
                        slice = true;
                        _pos++;
                        if (!IsOp(":") && !IsOp("]")) stop = ParseExpression();
                        if (IsOp(":")) { _pos++; if (!IsOp("]")) step = ParseExpression(); }
                    }
                    ExpectOp("]");
                    if (slice)
                        expr = new Expr(c => Values.Slice(target.Eval(c), start?.Eval(c), stop?.Eval(c), step?.Eval(c)));
                    else
                    {
                        var index = start!;
                        expr = new Expr(c => Values.GetItem(target.Eval(c), index.Eval(c), c));
                    }
                }
                else if (IsOp("("))
                {
                    var (args, kwargs) = ParseArguments();
                    var callee = expr;
                    var calleeName = expr.Name ?? "expression";
                    expr = new Expr(c => c.Call(callee.Eval(c), calleeName, Evaluate(args, c), EvaluateNamed(kwargs, c)));
                }
                else return expr;
            }
        }

        private (List<Expr> Args, List<(string, Expr)> Kwargs) ParseArguments()
        {
            ExpectOp("(");
            var args = new List<Expr>();
            var kwargs = new List<(string, Expr)>();
            while (!IsOp(")"))
            {
                if (Peek().Kind == TokenKind.Name && IsOp("=", 1))
                {
                    var key = Next().Value;
                    _pos++;
                    kwargs.Add((key, ParseExpression()));
                }
                else args.Add(ParseExpression());
                if (!IsOp(",")) break;
                _pos++;
            }
            ExpectOp(")");
            return (args, kwargs);
        }

        private static List<object?> Evaluate(List<Expr> args, Context c) => args.Select(a => a.Eval(c)).ToList();

        private static Dictionary<string, object?> EvaluateNamed(List<(string Key, Expr Value)> kwargs, Context c) =>
            kwargs.ToDictionary(k => k.Key, k => k.Value.Eval(c));

        private Expr ParseFiltersAndTests(Expr expr)
        {
            while (true)
            {
                if (IsOp("|"))
                {
                    _pos++;
                    var name = ExpectName();
                    var (args, kwargs) = IsOp("(") ? ParseArguments() : ([], []);
                    var target = expr;
                    Filters.Check(name, () => Fail($"the filter '{name}' is not supported by this chat-template renderer"));
                    expr = new Expr(c => Filters.Apply(name, target.Eval(c), Evaluate(args, c), EvaluateNamed(kwargs, c), c));
                }
                else if (IsName("is"))
                {
                    _pos++;
                    bool negate = false;
                    if (IsName("not")) { _pos++; negate = true; }
                    var name = Peek().Kind == TokenKind.Name ? Next().Value : Peek().Value is "==" or "!=" or "<" or ">" or "<=" or ">=" ? Next().Value : throw Fail("expected a test name after 'is'");
                    if (name is "none" or "true" or "false") name = name.ToLowerInvariant();
                    List<Expr> args = [];
                    if (IsOp("(")) args = ParseArguments().Args;
                    else if (Peek().Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float || (Peek().Kind == TokenKind.Name && Peek().Value is not ("and" or "or" or "else" or "if" or "in" or "not" or "is")))
                        args = [ParsePostfix(ParsePrimary())];
                    Tests.Check(name, () => Fail($"the test '{name}' is not supported by this chat-template renderer"));
                    var target = expr;
                    expr = new Expr(c => negate ^ Tests.Apply(name, target, Evaluate(args, c), c));
                }
                else return expr;
            }
        }
    }

    // ---------------------------------------------------------------- evaluation

    private sealed class Expr(Func<Context, object?> eval)
    {
        /// <summary>The variable name when the expression is a bare name (for "is defined" and error messages).</summary>
        public string? Name { get; init; }
        public object? Eval(Context c) => eval(c);
    }

    private abstract class Node
    {
        public abstract void Render(Context c, StringBuilder output);

        public static void RenderAll(List<Node> nodes, Context c, StringBuilder output)
        {
            foreach (var node in nodes) node.Render(c, output);
        }
    }

    private sealed class TextNode(string text) : Node
    {
        public override void Render(Context c, StringBuilder output) => output.Append(text);
    }

    private sealed class OutputNode(Expr expr) : Node
    {
        public override void Render(Context c, StringBuilder output) => output.Append(Values.Str(expr.Eval(c)));
    }

    private sealed class SequenceNode(List<Node> body) : Node
    {
        public override void Render(Context c, StringBuilder output) => RenderAll(body, c, output);
    }

    private sealed class IfNode(List<(Expr Condition, List<Node> Body)> branches, List<Node>? otherwise) : Node
    {
        public override void Render(Context c, StringBuilder output)
        {
            foreach (var (condition, body) in branches)
                if (Values.Truthy(condition.Eval(c))) { RenderAll(body, c, output); return; }
            if (otherwise is not null) RenderAll(otherwise, c, output);
        }
    }

    private sealed class LoopControl(bool isBreak) : Exception
    {
        public bool IsBreak { get; } = isBreak;
    }

    private sealed class LoopControlNode(bool Break) : Node
    {
        public override void Render(Context c, StringBuilder output) => throw new LoopControl(Break);
    }

    private sealed class SetNode(string name, string? attribute, Expr? value, List<Node>? body) : Node
    {
        public override void Render(Context c, StringBuilder output)
        {
            object? result;
            if (body is not null)
            {
                var captured = new StringBuilder();
                RenderAll(body, c, captured);
                result = captured.ToString();
            }
            else result = value!.Eval(c);
            if (attribute is null) { c.Set(name, result); return; }
            if (c.Lookup(name) is not Namespace ns)
                throw new InvalidOperationException($"{c.Origin}: '{{% set {name}.{attribute} %}}' needs {name} to be a namespace().");
            ns[attribute] = result;
        }
    }

    private sealed class ForNode(List<string> targets, Expr iterable, Expr? filter, List<Node> body, List<Node>? otherwise) : Node
    {
        public override void Render(Context c, StringBuilder output)
        {
            var source = Values.Iterate(iterable.Eval(c), c.Origin).ToList();
            if (filter is not null)
            {
                var kept = new List<object?>();
                foreach (var item in source)
                {
                    c.Push();
                    Bind(c, item);
                    if (Values.Truthy(filter.Eval(c))) kept.Add(item);
                    c.Pop();
                }
                source = kept;
            }
            if (source.Count == 0)
            {
                if (otherwise is not null) RenderAll(otherwise, c, output);
                return;
            }
            for (int i = 0; i < source.Count; i++)
            {
                c.Push();
                try
                {
                    Bind(c, source[i]);
                    c.Set("loop", new Dictionary<string, object?>
                    {
                        ["index"] = (long)i + 1, ["index0"] = (long)i,
                        ["revindex"] = (long)(source.Count - i), ["revindex0"] = (long)(source.Count - i - 1),
                        ["first"] = i == 0, ["last"] = i == source.Count - 1, ["length"] = (long)source.Count,
                        ["previtem"] = i > 0 ? source[i - 1] : Undefined.Of("loop.previtem"),
                        ["nextitem"] = i + 1 < source.Count ? source[i + 1] : Undefined.Of("loop.nextitem"),
                    });
                    RenderAll(body, c, output);
                }
                catch (LoopControl control)
                {
                    if (control.IsBreak) break;
                }
                finally { c.Pop(); }
            }
        }

        private void Bind(Context c, object? item)
        {
            if (targets.Count == 1) { c.Set(targets[0], item); return; }
            var parts = Values.Iterate(item, c.Origin).ToList();
            if (parts.Count != targets.Count)
                throw new InvalidOperationException($"{c.Origin}: cannot unpack {parts.Count} values into {string.Join(", ", targets)}.");
            for (int k = 0; k < targets.Count; k++) c.Set(targets[k], parts[k]);
        }
    }

    /// <summary>A value that was looked up and not found: renders as "", is false, iterates as empty (Jinja's Undefined).</summary>
    private sealed class Undefined
    {
        public required string Name { get; init; }
        public static Undefined Of(string name) => new() { Name = name };
    }

    /// <summary>namespace(...): the one object templates may assign attributes to inside loops.</summary>
    private sealed class Namespace : Dictionary<string, object?>;

    private delegate object? Function(List<object?> args, Dictionary<string, object?> kwargs);

    private sealed class Context
    {
        private readonly List<Dictionary<string, object?>> _scopes = [];
        private readonly IReadOnlyDictionary<string, object?> _variables;

        public Context(IReadOnlyDictionary<string, object?> variables, string origin)
        {
            _variables = variables;
            Origin = origin;
            _scopes.Add([]);
        }

        public string Origin { get; }

        public void Push() => _scopes.Add([]);
        public void Pop() => _scopes.RemoveAt(_scopes.Count - 1);
        public void Set(string name, object? value) => _scopes[^1][name] = value;

        public object? Lookup(string name)
        {
            for (int i = _scopes.Count - 1; i >= 0; i--)
                if (_scopes[i].TryGetValue(name, out var v)) return v;
            if (_variables.TryGetValue(name, out var value)) return value;
            return Globals.TryGetValue(name, out var function) ? function : Undefined.Of(name);
        }

        public object? Call(object? callee, string name, List<object?> args, Dictionary<string, object?> kwargs)
        {
            if (callee is Function f) return f(args, kwargs);
            if (callee is Undefined) throw new InvalidOperationException($"{Origin}: '{name}' is undefined and cannot be called.");
            throw new InvalidOperationException($"{Origin}: '{name}' is not callable.");
        }

        private Dictionary<string, object?> Globals => _globals ??= new()
        {
            ["raise_exception"] = (Function)((args, _) =>
                throw new InvalidOperationException($"The chat template ({Origin}) refused the input: {(args.Count > 0 ? Values.Str(args[0]) : "raise_exception()")}")),
            ["namespace"] = (Function)((args, kwargs) =>
            {
                var ns = new Namespace();
                foreach (var a in args) if (a is Dictionary<string, object?> d) foreach (var (k, v) in d) ns[k] = v;
                foreach (var (k, v) in kwargs) ns[k] = v;
                return ns;
            }),
            ["dict"] = (Function)((_, kwargs) => new Dictionary<string, object?>(kwargs)),
            ["range"] = (Function)((args, _) =>
            {
                long start = 0, stop, step = 1;
                if (args.Count == 1) stop = Values.ToLong(args[0]);
                else { start = Values.ToLong(args[0]); stop = Values.ToLong(args[1]); if (args.Count > 2) step = Values.ToLong(args[2]); }
                if (step == 0) throw new InvalidOperationException($"{Origin}: range() step must not be zero.");
                var list = new List<object?>();
                for (long i = start; step > 0 ? i < stop : i > stop; i += step) list.Add(i);
                return list;
            }),
            ["strftime_now"] = (Function)((args, _) => Values.Strftime(DateTime.Now, Values.Str(args[0]))),
        };
        private Dictionary<string, object?>? _globals;
    }

    // ---------------------------------------------------------------- values (Python semantics)

    private static class Values
    {
        public static bool Truthy(object? v) => v switch
        {
            null or Undefined => false,
            bool b => b,
            long l => l != 0,
            double d => d != 0,
            string s => s.Length > 0,
            System.Collections.ICollection c => c.Count > 0,
            _ => true,
        };

        /// <summary>Python's str(): what {{ }} prints.</summary>
        public static string Str(object? v) => v switch
        {
            null => "None",
            Undefined => "",
            string s => s,
            _ => Repr(v),
        };

        /// <summary>Python's repr(), used inside containers.</summary>
        public static string Repr(object? v) => v switch
        {
            null => "None",
            Undefined => "",
            bool b => b ? "True" : "False",
            long l => l.ToString(CultureInfo.InvariantCulture),
            double d => double.IsInteger(d) && Math.Abs(d) < 1e16 ? d.ToString("F1", CultureInfo.InvariantCulture) : d.ToString("R", CultureInfo.InvariantCulture),
            string s => "'" + s.Replace("\\", "\\\\").Replace("'", "\\'").Replace("\n", "\\n") + "'",
            Dictionary<string, object?> d => "{" + string.Join(", ", d.Select(p => Repr(p.Key) + ": " + Repr(p.Value))) + "}",
            List<object?> list => "[" + string.Join(", ", list.Select(Repr)) + "]",
            Function => "<function>",
            _ => v.ToString() ?? "",
        };

        public static long ToLong(object? v) => v switch
        {
            long l => l,
            bool b => b ? 1 : 0,
            double d => (long)d,
            _ => throw new InvalidOperationException($"expected an integer, got {Repr(v)}"),
        };

        private static bool IsNumber(object? v) => v is long or double or bool;
        private static double ToDouble(object? v) => v is double d ? d : ToLong(v);

        public static bool Equal(object? a, object? b)
        {
            if (IsNumber(a) && IsNumber(b)) return a is long or bool && b is long or bool ? ToLong(a) == ToLong(b) : ToDouble(a) == ToDouble(b);
            return (a, b) switch
            {
                (null, null) => true,
                (Undefined, Undefined) => true,
                (string x, string y) => x == y,
                (List<object?> x, List<object?> y) => x.Count == y.Count && x.Zip(y).All(p => Equal(p.First, p.Second)),
                (Dictionary<string, object?> x, Dictionary<string, object?> y) =>
                    x.Count == y.Count && x.All(p => y.TryGetValue(p.Key, out var other) && Equal(p.Value, other)),
                _ => ReferenceEquals(a, b),
            };
        }

        public static object Compare(string op, object? a, object? b)
        {
            switch (op)
            {
                case "==": return Equal(a, b);
                case "!=": return !Equal(a, b);
                case "in": return Contains(b, a);
                case "not in": return !Contains(b, a);
            }
            int order = (a, b) switch
            {
                (string x, string y) => string.CompareOrdinal(x, y),
                _ when IsNumber(a) && IsNumber(b) => ToDouble(a).CompareTo(ToDouble(b)),
                _ => throw new InvalidOperationException($"'{op}' is not supported between {Repr(a)} and {Repr(b)}"),
            };
            return op switch { "<" => order < 0, "<=" => order <= 0, ">" => order > 0, _ => order >= 0 };
        }

        public static bool Contains(object? container, object? item) => container switch
        {
            string s => item is string sub ? s.Contains(sub, StringComparison.Ordinal) : throw new InvalidOperationException($"'in <string>' needs a string on the left, got {Repr(item)}"),
            List<object?> list => list.Any(x => Equal(x, item)),
            Dictionary<string, object?> d => item is string key && d.ContainsKey(key),
            Undefined => false,
            _ => throw new InvalidOperationException($"'in' is not supported for {Repr(container)}"),
        };

        public static object? Arithmetic(string op, object? a, object? b)
        {
            if (a is Undefined u1) throw new InvalidOperationException($"'{u1.Name}' is undefined");
            if (b is Undefined u2) throw new InvalidOperationException($"'{u2.Name}' is undefined");
            switch (op, a, b)
            {
                case ("+", string x, string y): return x + y;
                case ("+", List<object?> x, List<object?> y): return x.Concat(y).ToList();
                case ("*", string x, long n): return string.Concat(Enumerable.Repeat(x, (int)Math.Max(0, n)));
                case ("*", List<object?> x, long n): return Enumerable.Range(0, (int)Math.Max(0, n)).SelectMany(_ => x).ToList();
            }
            if (!IsNumber(a) || !IsNumber(b))
                throw new InvalidOperationException($"unsupported operand types for {op}: {Repr(a)} and {Repr(b)} (use ~ to join text and values)");
            bool integers = a is long or bool && b is long or bool;
            if (integers && op is "+" or "-" or "*" or "//" or "%")
            {
                long x = ToLong(a), y = ToLong(b);
                if (op is "//" or "%" && y == 0) throw new InvalidOperationException("integer division or modulo by zero");
                return op switch
                {
                    "+" => x + y, "-" => x - y, "*" => x * y,
                    "//" => (long)Math.Floor((double)x / y),
                    _ => ((x % y) + y) % y,
                };
            }
            double p = ToDouble(a), q = ToDouble(b);
            return op switch
            {
                "+" => p + q, "-" => p - q, "*" => p * q, "/" => p / q,
                "//" => Math.Floor(p / q), "%" => p - q * Math.Floor(p / q),
                _ => integers && q >= 0 ? (object)(long)Math.Pow(p, q) : Math.Pow(p, q),
            };
        }

        public static IEnumerable<object?> Iterate(object? v, string origin) => v switch
        {
            List<object?> list => list,
            Dictionary<string, object?> d => d.Keys,
            string s => s.Select(ch => (object?)ch.ToString()),
            Undefined => [],
            _ => throw new InvalidOperationException($"{origin}: {Repr(v)} is not iterable"),
        };

        public static object? GetItem(object? target, object? key, Context c)
        {
            switch (target)
            {
                case Undefined u:
                    throw new InvalidOperationException($"{c.Origin}: '{u.Name}' is undefined, so it has no '{Str(key)}'.");
                case Dictionary<string, object?> d:
                    return key is string k && d.TryGetValue(k, out var value) ? value : Undefined.Of($"{Str(key)}");
                case List<object?> list when key is long or bool:
                    long i = ToLong(key);
                    if (i < 0) i += list.Count;
                    return i >= 0 && i < list.Count ? list[(int)i] : Undefined.Of($"[{Str(key)}]");
                case List<object?> list when key is string name && int.TryParse(name, out var index):
                    return index < list.Count ? list[index] : Undefined.Of(name);
                case string s when key is long or bool:
                    long j = ToLong(key);
                    if (j < 0) j += s.Length;
                    return j >= 0 && j < s.Length ? s[(int)j].ToString() : Undefined.Of($"[{Str(key)}]");
                default:
                    return Undefined.Of(Str(key));
            }
        }

        public static object? Slice(object? target, object? start, object? stop, object? step)
        {
            int n = target switch { string s => s.Length, List<object?> l => l.Count, _ => throw new InvalidOperationException($"{Repr(target)} cannot be sliced") };
            long st = step is null or Undefined ? 1 : ToLong(step);
            if (st == 0) throw new InvalidOperationException("slice step cannot be zero");
            long Clamp(object? v, long fallback)
            {
                if (v is null or Undefined) return fallback;
                long x = ToLong(v);
                if (x < 0) x += n;
                return st > 0 ? Math.Clamp(x, 0, n) : Math.Clamp(x, -1, n - 1);
            }
            long from = Clamp(start, st > 0 ? 0 : n - 1), to = Clamp(stop, st > 0 ? n : -1);
            var indices = new List<int>();
            for (long i = from; st > 0 ? i < to : i > to; i += st) indices.Add((int)i);
            return target is string str ? string.Concat(indices.Select(i => str[i])) : indices.Select(i => ((List<object?>)target!)[i]).ToList();
        }

        public static string ToJson(object? v, int? indent, int depth = 0)
        {
            string Pad(int d) => indent is int k ? "\n" + new string(' ', k * d) : "";
            return v switch
            {
                null or Undefined => "null",
                bool b => b ? "true" : "false",
                long or double => Repr(v),
                string s => JsonString(s),
                List<object?> list when list.Count == 0 => "[]",
                List<object?> list => "[" + string.Join(indent is null ? ", " : ",", list.Select(x => Pad(depth + 1) + ToJson(x, indent, depth + 1))) + Pad(depth) + "]",
                Dictionary<string, object?> d when d.Count == 0 => "{}",
                Dictionary<string, object?> d => "{" + string.Join(indent is null ? ", " : ",", d.Select(p => Pad(depth + 1) + JsonString(p.Key) + ": " + ToJson(p.Value, indent, depth + 1))) + Pad(depth) + "}",
                _ => JsonString(Str(v)),
            };
        }

        /// <summary>json.dumps of a string with ensure_ascii=False (transformers' tojson).</summary>
        private static string JsonString(string s)
        {
            var sb = new StringBuilder("\"");
            foreach (var ch in s)
            {
                switch (ch)
                {
                    case '"': sb.Append("\\\""); break;
                    case '\\': sb.Append("\\\\"); break;
                    case '\n': sb.Append("\\n"); break;
                    case '\r': sb.Append("\\r"); break;
                    case '\t': sb.Append("\\t"); break;
                    case '\b': sb.Append("\\b"); break;
                    case '\f': sb.Append("\\f"); break;
                    default:
                        if (ch < 0x20) sb.Append($"\\u{(int)ch:x4}"); else sb.Append(ch);
                        break;
                }
            }
            return sb.Append('"').ToString();
        }

        /// <summary>Python's strftime for the directives chat templates use (%d %b %B %Y %m %H %M %S %y %A %a %j %%).</summary>
        public static string Strftime(DateTime t, string format)
        {
            var sb = new StringBuilder();
            for (int i = 0; i < format.Length; i++)
            {
                if (format[i] != '%' || i + 1 == format.Length) { sb.Append(format[i]); continue; }
                char d = format[++i];
                sb.Append(d switch
                {
                    'd' => t.ToString("dd", CultureInfo.InvariantCulture), 'm' => t.ToString("MM", CultureInfo.InvariantCulture),
                    'Y' => t.ToString("yyyy", CultureInfo.InvariantCulture), 'y' => t.ToString("yy", CultureInfo.InvariantCulture),
                    'b' => t.ToString("MMM", CultureInfo.InvariantCulture), 'B' => t.ToString("MMMM", CultureInfo.InvariantCulture),
                    'a' => t.ToString("ddd", CultureInfo.InvariantCulture), 'A' => t.ToString("dddd", CultureInfo.InvariantCulture),
                    'H' => t.ToString("HH", CultureInfo.InvariantCulture), 'M' => t.ToString("mm", CultureInfo.InvariantCulture),
                    'S' => t.ToString("ss", CultureInfo.InvariantCulture), 'j' => t.DayOfYear.ToString("D3", CultureInfo.InvariantCulture),
                    '%' => "%",
                    _ => "%" + d,
                });
            }
            return sb.ToString();
        }

        /// <summary>A JSON value as a template value (objects keep their key order).</summary>
        public static object? FromJson(JsonElement e) => e.ValueKind switch
        {
            JsonValueKind.String => e.GetString(),
            JsonValueKind.Number => e.TryGetInt64(out var l) ? l : e.GetDouble(),
            JsonValueKind.True => true,
            JsonValueKind.False => false,
            JsonValueKind.Array => e.EnumerateArray().Select(FromJson).ToList(),
            JsonValueKind.Object => e.EnumerateObject().ToDictionary(p => p.Name, p => FromJson(p.Value)),
            _ => null,
        };
    }

    /// <summary>Converts a JSON element into the value the template sees.</summary>
    public static object? FromJson(JsonElement element) => Values.FromJson(element);

    private static class Methods
    {
        public static object? Call(object? target, string name, List<object?> args, Dictionary<string, object?> kwargs, Context c)
        {
            string? Arg(int i) => i < args.Count && args[i] is not null ? Values.Str(args[i]) : null;
            switch (target)
            {
                case string s:
                    switch (name)
                    {
                        case "strip": return Arg(0) is { } chars ? s.Trim(chars.ToCharArray()) : s.Trim();
                        case "lstrip": return Arg(0) is { } l ? s.TrimStart(l.ToCharArray()) : s.TrimStart();
                        case "rstrip": return Arg(0) is { } r ? s.TrimEnd(r.ToCharArray()) : s.TrimEnd();
                        case "upper": return s.ToUpperInvariant();
                        case "lower": return s.ToLowerInvariant();
                        case "title": return Filters.Title(s);
                        case "capitalize": return Filters.Capitalize(s);
                        case "startswith": return args[0] is List<object?> p ? p.Any(x => s.StartsWith(Values.Str(x), StringComparison.Ordinal)) : s.StartsWith(Arg(0)!, StringComparison.Ordinal);
                        case "endswith": return args[0] is List<object?> q ? q.Any(x => s.EndsWith(Values.Str(x), StringComparison.Ordinal)) : s.EndsWith(Arg(0)!, StringComparison.Ordinal);
                        case "replace": return s.Replace(Arg(0)!, Arg(1)!, StringComparison.Ordinal);
                        case "split":
                            return (Arg(0) is { } sep ? s.Split(sep) : s.Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries)).Select(x => (object?)x).ToList();
                        case "find": return (long)s.IndexOf(Arg(0)!, StringComparison.Ordinal);
                        case "count": return (long)(s.Length - s.Replace(Arg(0)!, "", StringComparison.Ordinal).Length) / Math.Max(1, Arg(0)!.Length);
                        case "join": return string.Join(s, Values.Iterate(args[0], c.Origin).Select(Values.Str));
                        case "format": return string.Format(CultureInfo.InvariantCulture, Filters.PythonFormatToNet(s), args.Select(Values.Str).ToArray());
                    }
                    break;
                case Dictionary<string, object?> d when target is not Namespace:
                    switch (name)
                    {
                        case "get": return args.Count > 0 && args[0] is string key && d.TryGetValue(key, out var v) ? v : args.Count > 1 ? args[1] : null;
                        case "items": return d.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList();
                        case "keys": return d.Keys.Select(k => (object?)k).ToList();
                        case "values": return d.Values.ToList();
                    }
                    if (d.TryGetValue(name, out var member)) return c.Call(member, name, args, kwargs);
                    break;
                case Undefined u:
                    throw new InvalidOperationException($"{c.Origin}: '{u.Name}' is undefined, so it has no method '{name}'.");
            }
            throw new InvalidOperationException($"{c.Origin}: {Values.Repr(target)} has no method '{name}' this renderer supports.");
        }
    }

    private static class Filters
    {
        private static readonly HashSet<string> Names =
        [
            "trim", "length", "count", "upper", "lower", "title", "capitalize", "default", "d", "join", "tojson", "list", "first", "last",
            "string", "int", "float", "items", "selectattr", "rejectattr", "map", "reverse", "replace", "safe", "abs", "select", "reject",
            "unique", "sort", "dictsort", "indent", "wordcount", "round", "sum", "min", "max", "e", "escape", "striptags", "center",
        ];

        public static void Check(string name, Func<Exception> fail)
        {
            if (!Names.Contains(name)) throw fail();
        }

        public static string Title(string s)
        {
            var sb = new StringBuilder(s.Length);
            bool start = true;
            foreach (var ch in s)
            {
                sb.Append(start ? char.ToUpperInvariant(ch) : char.ToLowerInvariant(ch));
                start = !char.IsLetterOrDigit(ch);
            }
            return sb.ToString();
        }

        public static string Capitalize(string s) => s.Length == 0 ? s : char.ToUpperInvariant(s[0]) + s[1..].ToLowerInvariant();

        public static string PythonFormatToNet(string s)
        {
            int auto = 0;
            var sb = new StringBuilder();
            for (int i = 0; i < s.Length; i++)
            {
                if (s[i] == '{' && i + 1 < s.Length && s[i + 1] == '}') { sb.Append('{').Append(auto++).Append('}'); i++; }
                else sb.Append(s[i]);
            }
            return sb.ToString();
        }

        public static object? Apply(string name, object? value, List<object?> args, Dictionary<string, object?> kwargs, Context c)
        {
            object? Named(string key, int position) => kwargs.TryGetValue(key, out var v) ? v : position < args.Count ? args[position] : null;
            switch (name)
            {
                case "trim":
                    var s = Values.Str(value);
                    return Named("chars", 0) is string chars ? s.Trim(chars.ToCharArray()) : s.Trim();
                case "length" or "count":
                    return value switch
                    {
                        string str => (long)str.Length,
                        System.Collections.ICollection col => (long)col.Count,
                        Undefined => 0L,
                        _ => throw new InvalidOperationException($"{c.Origin}: {Values.Repr(value)} has no length"),
                    };
                case "upper": return Values.Str(value).ToUpperInvariant();
                case "lower": return Values.Str(value).ToLowerInvariant();
                case "title": return Title(Values.Str(value));
                case "capitalize": return Capitalize(Values.Str(value));
                case "string" or "safe" or "e" or "escape": return name == "string" ? Values.Str(value) : value;
                case "default" or "d":
                    bool boolean = Values.Truthy(Named("boolean", 1));
                    return value is Undefined || (boolean && !Values.Truthy(value)) ? Named("default_value", 0) ?? "" : value;
                case "join":
                    var items = Values.Iterate(value, c.Origin);
                    if (Named("attribute", 1) is { } attr) items = items.Select(x => Values.GetItem(x, attr, c));
                    return string.Join(Values.Str(Named("d", 0) ?? ""), items.Select(Values.Str));
                case "tojson":
                    return Values.ToJson(value, Named("indent", 0) is { } indent ? (int)Values.ToLong(indent) : null);
                case "list": return Values.Iterate(value, c.Origin).ToList();
                case "first": return Values.Iterate(value, c.Origin).DefaultIfEmpty(Undefined.Of("first")).First();
                case "last": return Values.Iterate(value, c.Origin).DefaultIfEmpty(Undefined.Of("last")).Last();
                case "reverse": return value is string rs ? new string(rs.Reverse().ToArray()) : Values.Iterate(value, c.Origin).Reverse().ToList();
                case "int": return value is string si ? long.TryParse(si.Trim(), NumberStyles.Integer, CultureInfo.InvariantCulture, out var n) ? n : 0L : Values.ToLong(value);
                case "float": return value is string sf ? double.TryParse(sf, NumberStyles.Float, CultureInfo.InvariantCulture, out var f) ? f : 0.0 : value is double dv ? dv : (double)Values.ToLong(value);
                case "abs": return value is double ad ? Math.Abs(ad) : Math.Abs(Values.ToLong(value));
                case "items": return value is Dictionary<string, object?> d ? d.Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList() : new List<object?>();
                case "replace": return Values.Str(value).Replace(Values.Str(args[0]), Values.Str(args[1]), StringComparison.Ordinal);
                case "wordcount": return (long)Values.Str(value).Split((char[]?)null, StringSplitOptions.RemoveEmptyEntries).Length;
                case "unique":
                    var seen = new List<object?>();
                    foreach (var x in Values.Iterate(value, c.Origin)) if (!seen.Any(y => Values.Equal(x, y))) seen.Add(x);
                    return seen;
                case "sum": return Values.Iterate(value, c.Origin).Aggregate((object?)0L, (acc, x) => Values.Arithmetic("+", acc, x));
                case "min": return Values.Iterate(value, c.Origin).Aggregate((a, b) => (bool)Values.Compare("<=", a, b) ? a : b);
                case "max": return Values.Iterate(value, c.Origin).Aggregate((a, b) => (bool)Values.Compare(">=", a, b) ? a : b);
                case "round":
                    int digits = args.Count > 0 ? (int)Values.ToLong(args[0]) : 0;
                    return Math.Round(value is double rd ? rd : Values.ToLong(value), digits, MidpointRounding.ToEven);
                case "indent":
                    var width = args.Count > 0 ? (int)Values.ToLong(args[0]) : 4;
                    var lines = Values.Str(value).Split('\n');
                    bool indentFirst = Values.Truthy(Named("first", 1));
                    return string.Join("\n", lines.Select((l, i) => (i == 0 && !indentFirst) || l.Length == 0 ? l : new string(' ', width) + l));
                case "selectattr" or "rejectattr":
                {
                    bool keep = name == "selectattr";
                    var attribute = args[0];
                    string? test = args.Count > 1 ? Values.Str(args[1]) : null;
                    return Values.Iterate(value, c.Origin).Where(x =>
                    {
                        var member = Values.GetItem(x, attribute, c);
                        bool passes = test is null ? Values.Truthy(member) : Tests.ApplyValue(test, member, args.Skip(2).ToList(), c);
                        return passes == keep;
                    }).ToList();
                }
                case "select" or "reject":
                {
                    bool keep = name == "select";
                    string? test = args.Count > 0 ? Values.Str(args[0]) : null;
                    return Values.Iterate(value, c.Origin).Where(x =>
                        (test is null ? Values.Truthy(x) : Tests.ApplyValue(test, x, args.Skip(1).ToList(), c)) == keep).ToList();
                }
                case "map":
                    if (kwargs.TryGetValue("attribute", out var mapAttribute))
                        return Values.Iterate(value, c.Origin).Select(x => Values.GetItem(x, mapAttribute, c) is Undefined && kwargs.TryGetValue("default", out var dflt) ? dflt : Values.GetItem(x, mapAttribute, c)).ToList();
                    var filter = Values.Str(args[0]);
                    Check(filter, () => new InvalidOperationException($"{c.Origin}: map('{filter}') names an unsupported filter."));
                    return Values.Iterate(value, c.Origin).Select(x => Apply(filter, x, args.Skip(1).ToList(), [], c)).ToList();
                case "sort" or "dictsort":
                    var list = name == "dictsort" && value is Dictionary<string, object?> sd
                        ? sd.OrderBy(p => p.Key, StringComparer.Ordinal).Select(p => (object?)new List<object?> { p.Key, p.Value }).ToList()
                        : Values.Iterate(value, c.Origin).ToList();
                    if (name == "sort")
                    {
                        var by = kwargs.TryGetValue("attribute", out var sa) ? sa : null;
                        list.Sort((a, b) => (bool)Values.Compare("<", by is null ? a : Values.GetItem(a, by, c), by is null ? b : Values.GetItem(b, by, c)) ? -1
                            : (bool)Values.Compare("==", by is null ? a : Values.GetItem(a, by, c), by is null ? b : Values.GetItem(b, by, c)) ? 0 : 1);
                        if (Values.Truthy(Named("reverse", 0))) list.Reverse();
                    }
                    return list;
                case "striptags": return System.Text.RegularExpressions.Regex.Replace(Values.Str(value), "<[^>]*>", "");
                case "center":
                    var text = Values.Str(value);
                    int total = args.Count > 0 ? (int)Values.ToLong(args[0]) : 80;
                    return text.PadLeft((total + text.Length) / 2).PadRight(total);
            }
            throw new InvalidOperationException($"{c.Origin}: the filter '{name}' is not supported.");
        }
    }

    private static class Tests
    {
        private static readonly HashSet<string> Names =
        [
            "defined", "undefined", "none", "string", "number", "integer", "float", "mapping", "iterable", "sequence", "boolean",
            "true", "false", "equalto", "eq", "==", "ne", "!=", "lt", "<", "le", "<=", "gt", ">", "ge", ">=", "in", "odd", "even",
            "divisibleby", "lower", "upper", "callable", "sameas",
        ];

        public static void Check(string name, Func<Exception> fail)
        {
            if (!Names.Contains(name)) throw fail();
        }

        public static bool Apply(string name, Expr target, List<object?> args, Context c) => ApplyValue(name, target.Eval(c), args, c);

        public static bool ApplyValue(string name, object? v, List<object?> args, Context c)
        {
            object? Arg() => args.Count > 0 ? args[0] : throw new InvalidOperationException($"{c.Origin}: the test '{name}' needs an argument.");
            return name switch
            {
                "defined" => v is not Undefined,
                "undefined" => v is Undefined,
                "none" => v is null,
                "string" => v is string,
                "number" => v is long or double,
                "integer" => v is long,
                "float" => v is double,
                "boolean" => v is bool,
                "true" => v is true,
                "false" => v is false,
                "mapping" => v is Dictionary<string, object?>,
                "iterable" => v is string or List<object?> or Dictionary<string, object?>,
                "sequence" => v is string or List<object?> or Dictionary<string, object?>,
                "callable" => v is Function,
                "equalto" or "eq" or "==" => Values.Equal(v, Arg()),
                "ne" or "!=" => !Values.Equal(v, Arg()),
                "lt" or "<" => (bool)Values.Compare("<", v, Arg()),
                "le" or "<=" => (bool)Values.Compare("<=", v, Arg()),
                "gt" or ">" => (bool)Values.Compare(">", v, Arg()),
                "ge" or ">=" => (bool)Values.Compare(">=", v, Arg()),
                "in" => Values.Contains(Arg(), v),
                "odd" => Values.ToLong(v) % 2 != 0,
                "even" => Values.ToLong(v) % 2 == 0,
                "divisibleby" => Values.ToLong(v) % Values.ToLong(Arg()) == 0,
                "lower" => v is string sl && sl == sl.ToLowerInvariant(),
                "upper" => v is string su && su == su.ToUpperInvariant(),
                "sameas" => ReferenceEquals(v, Arg()) || (v is bool b1 && Arg() is bool b2 && b1 == b2) || (v is null && Arg() is null),
                _ => throw new InvalidOperationException($"{c.Origin}: the test '{name}' is not supported."),
            };
        }
    }
}
