// UI strings in English and Chinese. t(key, params, fallback) → the string in the current
// language with {name} placeholders filled. The language comes from localStorage, else the
// browser (zh* → zh, else en); setLang() switches it and tells listeners (the app re-renders).

export const LANGS = ['zh', 'en'];
const STORAGE_KEY = 'fastnpc.lang';

// key: [English, Chinese]
const STRINGS = {
  // shell
  'nav.label': ['Main', '主导航'],
  'nav.characters': ['Characters', '角色'],
  'nav.new': ['New character', '新建角色'],
  'nav.groups': ['Groups', '群聊'],
  'nav.settings': ['Settings', '设置'],
  'nav.admin': ['Admin', '管理'],
  'nav.logout': ['Log out', '退出登录'],
  'nav.signedInAs': ['Signed in as {name}', '当前用户：{name}'],
  'logout.failed': ['Logging out did not work ({message}); you are still signed in. Try again.', '退出登录未成功（{message}），你仍处于登录状态，请重试。'],
  'nav.skip': ['Skip to content', '跳到正文'],
  'footer.text': ['FastNPC — role-play characters from encyclopedia text', 'FastNPC — 从百科文本生成可对话的角色'],
  'lang.label': ['Interface language', '界面语言'],
  'lang.short': ['Language', '语言'],
  'lang.zh': ['中文', '中文'],
  'lang.en': ['English', 'English'],
  'banner.title': ['Simulated model.', '模拟模型。'],
  'banner.body': [
    'Profiles and replies are placeholder text from the built-in LLM simulator, not from a real model.',
    '角色资料和回复是内置 LLM 模拟器生成的占位文本，并非来自真实模型。',
  ],
  'banner.howto.before': ['To use a real model, set ', '如需使用真实模型，请设置 '],
  'banner.howto.and': [' and ', ' 和 '],
  'banner.howto.or': [' (or ', '（或只设置 '],
  'banner.howto.after': [') and restart the server.', '），然后重启服务。'],

  // common
  'common.loading': ['Loading…', '加载中…'],
  'common.retry': ['Retry', '重试'],
  'common.cancel': ['Cancel', '取消'],
  'common.confirm': ['Confirm', '确认'],
  'common.delete': ['Delete', '删除'],
  'common.save': ['Save', '保存'],
  'common.saved': ['Saved.', '已保存。'],
  'common.loadMore': ['Load more', '加载更多'],
  'common.counter': ['{n} / {max}', '{n} / {max}'],
  'common.listSeparator': [', ', '、'],

  // errors
  'error.title': ['Something went wrong', '出错了'],
  'error.unknown': ['Something went wrong.', '发生了未知错误。'],
  'error.network.title': ['Network error', '网络错误'],
  'error.network': ['Cannot reach the server. Check your connection and try again.', '无法连接服务器，请检查网络后重试。'],
  'error.server': ['The server failed ({status}). Try again shortly.', '服务器出错（{status}），请稍后重试。'],
  'error.status': ['The request failed ({status}).', '请求失败（{status}）。'],
  'error.notFound': ['Not found.', '未找到。'],
  'error.unexpected': ['The server sent an unexpected answer.', '服务器返回了意外的内容。'],
  'stream.reconnecting': ['Connection lost — reconnecting…', '连接中断，正在重连…'],

  // auth
  'auth.login.title': ['Log in', '登录'],
  'auth.register.title': ['Create an account', '注册账号'],
  'auth.tagline': ['Turn encyclopedia text into characters you can talk to.', '把百科文本变成可以对话的角色。'],
  'auth.username': ['Username', '用户名'],
  'auth.username.hint': ['3 to 32 letters, digits, “_”, “-” or “.”.', '3–32 个字符，可用字母、数字、“_”、“-”、“.”。'],
  'auth.password': ['Password', '密码'],
  'auth.password.hint': ['At least {min} characters, not containing the username.', '至少 {min} 个字符，不能包含用户名。'],
  'auth.confirm': ['Repeat the password', '再次输入密码'],
  'auth.login.submit': ['Log in', '登录'],
  'auth.register.submit': ['Create account', '注册'],
  'auth.noAccount': ['No account yet?', '还没有账号？'],
  'auth.haveAccount': ['Already have an account?', '已有账号？'],
  'auth.register.link': ['Sign up', '注册'],
  'auth.login.link': ['Log in', '登录'],
  'auth.error.username': ['Enter your username.', '请输入用户名。'],
  'auth.error.password': ['Enter your password.', '请输入密码。'],
  'auth.error.short': ['The password needs at least {min} characters.', '密码至少需要 {min} 个字符。'],
  'auth.error.long': ['The password may have at most {max} characters.', '密码最多 {max} 个字符。'],
  'auth.error.mismatch': ['The two passwords differ.', '两次输入的密码不一致。'],

  // statuses
  'status.ready': ['Ready', '就绪'],
  'status.generating': ['Generating', '生成中'],
  'status.failed': ['Failed', '失败'],
  'job.queued': ['Queued', '排队中'],
  'job.running': ['Running', '进行中'],
  'job.succeeded': ['Done', '已完成'],
  'job.failed': ['Failed', '失败'],
  'job.cancelled': ['Cancelled', '已取消'],
  'source.kind.text': ['Pasted text', '粘贴的文本'],
  'source.kind.wikipedia': ['Wikipedia', '维基百科'],
  'source.kind.baike': ['Baidu Baike', '百度百科'],
  'source.kind.url': ['Web page', '网页'],

  // characters list
  'characters.title': ['Your characters', '我的角色'],
  'characters.new': ['New character', '新建角色'],
  'characters.filter': ['Filter by name', '按名称筛选'],
  'characters.filter.placeholder': ['Type a name…', '输入名称…'],
  'characters.empty': ['No characters yet. Create your first one from a source text.', '还没有角色。用一段资料文本创建第一个吧。'],
  'characters.noMatch': ['No character matches the filter.', '没有符合筛选条件的角色。'],
  'characters.count': ['{n} characters', '共 {n} 个角色'],
  'characters.filtered': ['{shown} of {total} characters', '显示 {shown} / {total} 个角色'],
  'characters.created': ['Created {when}', '创建于 {when}'],
  'characters.chat': ['Chat', '对话'],
  'characters.viewProgress': ['View progress', '查看进度'],
  'characters.delete.aria': ['Delete {name}', '删除 {name}'],
  'characters.import': ['Import card', '导入角色卡'],
  'characters.import.hint': [
    'A Character Card (.png or .json, at most {max}) from SillyTavern or another character-chat app. You can also drop the file on this page.',
    '来自 SillyTavern 等角色聊天应用的角色卡（.png 或 .json，最大 {max}），也可以把文件直接拖放到本页。',
  ],
  'characters.import.working': ['Importing {file}…', '正在导入 {file}…'],
  'characters.import.refused': ['{file} was not imported: {message}', '{file} 未能导入：{message}'],
  'characters.import.tooLarge': ['{file} was not imported: a card file may be at most {max}.', '{file} 未能导入：角色卡文件最大 {max}。'],
  'characters.import.drop': ['Drop the card file to import it', '松开鼠标即可导入角色卡'],
  'characters.delete.title': ['Delete “{name}”?', '删除“{name}”？'],
  'characters.delete.body': [
    'The character, its conversation and its memory are deleted for good. Groups keep their other members.',
    '角色及其对话和记忆将被永久删除。群聊中的其他成员不受影响。',
  ],

  // create
  'create.title': ['New character', '新建角色'],
  'create.lead': [
    'Name a person and say where their story comes from: a Wikipedia or Baidu Baike article (search for the name and choose the right entry), a web page, or a text you paste. FastNPC writes a persona profile in eight categories plus source metadata and a brief.',
    '输入人物名称并选择资料来源：维基百科或百度百科词条（搜索名称并选择正确的词条）、网页，或粘贴的文本。FastNPC 会生成八个类别的人设资料，以及来源信息和简介。',
  ],
  'create.name': ['Name', '名称'],
  'create.name.hint': ['Up to {max} characters.', '最多 {max} 个字符。'],
  'create.name.hintWikipedia': [
    'The character’s name, and what is searched on Wikipedia (Search or Enter). Up to {max} characters.',
    '角色的名称，也是在维基百科中搜索的关键词（点击“搜索”或按 Enter）。最多 {max} 个字符。',
  ],
  'create.name.hintBaike': [
    'The character’s name, and what is searched on Baidu Baike (Search or Enter). Up to {max} characters.',
    '角色的名称，也是在百度百科中搜索的关键词（点击“搜索”或按 Enter）。最多 {max} 个字符。',
  ],
  'create.source': ['Source', '资料来源'],
  'create.source.kind': ['Where the facts come from', '资料来自'],
  'create.kind.wikipedia': ['Wikipedia', '维基百科'],
  'create.kind.baike': ['Baidu Baike', '百度百科'],
  'create.kind.url': ['A web page (address)', '网页（网址）'],
  'create.kind.text': ['Pasted text', '粘贴文本'],
  'create.edition': ['Wikipedia edition', '维基百科语言版本'],
  'create.edition.option': ['{name} ({code})', '{name}（{code}）'],
  'create.edition.zh': ['Chinese', '中文'],
  'create.edition.en': ['English', '英语'],
  'create.edition.ja': ['Japanese', '日语'],
  'create.edition.fr': ['French', '法语'],
  'create.edition.de': ['German', '德语'],
  'create.edition.other': ['Another edition…', '其他语言版本…'],
  'create.edition.otherLabel': ['Edition code', '语言版本代码'],
  'create.edition.otherPlaceholder': ['e.g. es, ko, zh-yue', '例如 es、ko、zh-yue'],
  'create.search': ['Search', '搜索'],
  'create.in.wikipedia': ['Wikipedia ({lang})', '维基百科（{lang}）'],
  'create.in.baike': ['Baidu Baike', '百度百科'],
  'create.searching': ['Searching {where} for “{q}”…', '正在{where}中搜索“{q}”…'],
  'create.found': ['{n} entries for “{q}” on {where}.', '在{where}中找到 {n} 个与“{q}”相关的词条。'],
  'create.nothingFound': [
    'Nothing found for “{q}” on {where}. Check the spelling, or try another edition or source.',
    '在{where}中没有找到“{q}”。请检查拼写，或换一个语言版本或来源。',
  ],
  'create.candidates.choose': ['Choose the entry you mean', '请选择你要的词条'],
  'create.ambiguous': [
    '“{title}” names several entries on {where}. Choose the one you mean, then create the character.',
    '“{title}”在{where}中对应多个词条。请选择你要的那一个，然后再创建角色。',
  ],
  'create.candidate.id': ['entry {id}', '词条 {id}'],
  'create.candidate.noDescription': ['No description', '暂无简介'],
  'create.candidate.open': ['Open ↗', '打开 ↗'],
  'create.candidate.openAria': ['Open “{title}” in a new tab', '在新标签页中打开“{title}”'],
  'create.chosen': ['The character will be created from “{title}” ({where}).', '将根据“{title}”（{where}）创建角色。'],
  'create.url': ['Page address', '网页地址'],
  'create.url.hint': ['An http:// or https:// address of a page about the person.', '关于该人物的网页地址，以 http:// 或 https:// 开头。'],
  'create.source.textLabel': ['Source text', '资料文本'],
  'create.source.textInstead': ['… or paste a text about them instead', '……或者直接粘贴关于 TA 的文本'],
  'create.source.insteadHint': ['Typing here switches the source to pasted text.', '在此输入会把资料来源切换为粘贴文本。'],
  'create.source.placeholder': ['Paste the text here…', '在此粘贴资料文本…'],
  'create.source.hint': ['At least {min} and at most {max} characters.', '至少 {min} 个字符，最多 {max} 个字符。'],
  'create.language': ['Language', '语言'],
  'create.language.auto': ['Detect from the source', '根据资料自动识别'],
  'create.language.hint': ['The language of the profile and of the character’s replies.', '角色资料和角色回复所用的语言。'],
  'create.submit': ['Create character', '创建角色'],
  'create.error.nameEmpty': ['Enter a name.', '请输入名称。'],
  'create.error.nameLong': ['The name may have at most {max} characters.', '名称最多 {max} 个字符。'],
  'create.error.searchEmpty': ['Type a name to search for.', '请输入要搜索的名称。'],
  'create.error.editionEmpty': ['Type the code of the Wikipedia edition (e.g. es).', '请输入维基百科语言版本代码（例如 es）。'],
  'create.error.edition': [
    '“{code}” is not a Wikipedia edition code: lowercase letters, such as es, ko or zh-yue.',
    '“{code}”不是有效的维基百科语言版本代码：应为小写字母，例如 es、ko 或 zh-yue。',
  ],
  'create.error.titleLong': ['An article title may have at most {max} characters.', '词条标题最多 {max} 个字符。'],
  'create.error.urlEmpty': ['Enter the page’s address.', '请输入网页地址。'],
  'create.error.urlLong': ['The address may have at most {max} characters.', '网址最多 {max} 个字符。'],
  'create.error.url': ['Enter a full address starting with http:// or https://.', '请输入以 http:// 或 https:// 开头的完整网址。'],
  'create.error.sourceEmpty': ['Paste a source text.', '请粘贴资料文本。'],
  'create.error.sourceShort': ['The source text needs at least {min} characters (it has {n}).', '资料文本至少需要 {min} 个字符（当前 {n} 个）。'],
  'create.error.sourceLong': ['The source text may have at most {max} characters.', '资料文本最多 {max} 个字符。'],

  // generating
  'generating.title': ['Generating character', '正在生成角色'],
  'generating.titleNamed': ['Generating “{name}”', '正在生成“{name}”'],
  'generating.overall': ['Progress', '进度'],
  'generating.count': ['{done} of {total} steps', '{done} / {total} 步'],
  'generating.elapsed': ['Elapsed', '已用时间'],
  'generating.cancel': ['Cancel generation', '取消生成'],
  'generating.cancelling': ['Cancelling…', '正在取消…'],
  'generating.failed': ['The generation failed.', '生成失败。'],
  'generating.cancelled': ['The generation was cancelled. Retry to start it again.', '生成已取消。可以点击重试重新开始。'],
  'generating.failedNoJob': ['The generation failed. Delete the character and create it again.', '生成失败。请删除该角色后重新创建。'],
  'generating.noJob': [
    'Step details are only shown in the browser that started the generation; waiting for the character to be ready…',
    '步骤详情只在发起生成的浏览器中显示；正在等待角色生成完成…',
  ],
  'generating.note': [
    'The categories are written at the same time, so they finish in any order. You can leave this page: the generation continues.',
    '各类别同时生成，完成顺序不固定。离开本页面不会中断生成。',
  ],
  'generating.step.source': ['Source metadata and brief', '来源信息与简介'],
  'generating.step.fetching': ['Fetching the source', '获取资料来源'],
  'generating.stepFailed': ['failed', '失败'],
  'generating.error.withDetails': ['{friendly} Details: {message}', '{friendly}详情：{message}'],
  'generating.error.source_not_found': [
    'The article or page was not found.',
    '没有找到该词条或网页。',
  ],
  'generating.error.source_unavailable': [
    'The source could not be reached or did not answer in time. Retry in a moment.',
    '资料来源暂时无法访问或响应超时，请稍后重试。',
  ],
  'generating.error.source_blocked': [
    'The source was refused (a disallowed address, or a page too large or not text).',
    '资料来源被拒绝（地址不被允许，或网页过大、不是文本）。',
  ],
  'generating.error.source_too_short': [
    'The source has too little text to write a character from.',
    '资料来源的文字太少，无法生成角色。',
  ],
  'generating.error.source_ambiguous': [
    'The title names several entries. Create the character again and choose one of them.',
    '该标题对应多个词条。请重新创建角色并选择其中一个。',
  ],
  'generating.createAgain': ['Create again', '重新创建'],
  'generating.stepDone': ['done', '已完成'],
  'generating.stepPending': ['pending', '等待中'],
  'generating.viewCharacter': ['View character', '查看角色'],

  // character
  'character.chat': ['Chat', '开始对话'],
  'character.meta': ['Language: {language} · created {when}', '语言：{language} · 创建于 {when}'],
  'character.brief': ['Brief', '简介'],
  'character.failed': ['The generation of this character failed.', '该角色生成失败。'],
  'character.failed.details': ['Details and retry', '查看详情并重试'],
  'character.generating': ['This character is still being generated.', '该角色仍在生成中。'],
  'character.source': ['Where it came from', '资料来源'],
  'character.source.kind': ['Source', '来源'],
  'character.source.length': ['Length', '长度'],
  'character.source.chars': ['{n} characters', '{n} 个字符'],
  'character.source.url': ['Address', '地址'],
  'character.source.show': ['Show the source text', '显示资料原文'],
  'character.source.edition': ['Edition', '语言版本'],
  'character.source.title': ['Title', '标题'],
  'character.source.entry': ['Entry', '词条'],
  'character.source.notFetched': ['The source has not been fetched yet.', '资料来源尚未获取。'],
  'character.snapshot': ['Fetched document', '获取的资料'],
  'character.snapshot.url': ['Address', '地址'],
  'character.snapshot.title': ['Title', '标题'],
  'character.snapshot.revision': ['Revision', '版本'],
  'character.snapshot.fetched': ['Fetched', '获取时间'],
  'character.snapshot.size': ['Size', '大小'],
  'character.snapshot.truncated': ['{n} characters (cut at the size limit)', '{n} 个字符（已按大小上限截断）'],
  'character.snapshot.show': ['Show the fetched text (Markdown)', '显示获取的文本（Markdown）'],
  'character.promptVersion': ['Prompt version', '提示词版本'],
  'character.export': ['Export card', '导出角色卡'],
  'character.export.hint': [
    'A Character Card for SillyTavern and other character-chat apps: a PNG image with the card inside, or a JSON file. Every app reads V2; V3 is the newer spec.',
    '可导入 SillyTavern 等角色聊天应用的角色卡：内嵌角色卡的 PNG 图片，或 JSON 文件。所有应用都能读取 V2；V3 是较新的规范。',
  ],
  'character.export.png': ['PNG image, {spec}', 'PNG 图片，{spec}'],
  'character.export.json': ['JSON file, {spec}', 'JSON 文件，{spec}'],
  'character.export.working': ['Preparing the card…', '正在生成角色卡…'],
  'character.export.done': ['Downloaded {file}.', '已下载 {file}。'],
  'character.export.failed': ['The card could not be exported: {message}', '角色卡导出失败：{message}'],

  // pictures (avatars)
  'avatar.change': ['Change picture', '更换头像'],
  'avatar.remove': ['Remove picture', '移除头像'],
  'avatar.hint': ['PNG, JPEG, WebP or GIF, up to {max}.', '支持 PNG、JPEG、WebP 或 GIF，最大 {max}。'],
  'avatar.uploading': ['Uploading {file}…', '正在上传 {file}…'],
  'avatar.saved': ['Picture saved.', '头像已保存。'],
  'avatar.removed': ['Picture removed.', '头像已移除。'],
  'avatar.refused': ['{file} was not used as the picture: {message}', '{file} 未能用作头像：{message}'],
  'avatar.tooLarge': ['{file} was not used as the picture: a picture may be at most {max}.', '{file} 未能用作头像：图片最大 {max}。'],
  'avatar.remove.title': ['Remove the picture?', '移除头像？'],
  'avatar.remove.body': ['The picture is deleted and the initial is shown instead. You can upload another at any time.', '头像将被删除，改为显示名字的首字。你可以随时重新上传。'],
  'avatar.character.alt': ['Picture of {name}', '{name}的头像'],
  'avatar.character.none': ['{name} has no picture yet', '{name}还没有头像'],
  'avatar.mine.alt': ['Your picture', '你的头像'],
  'avatar.mine.none': ['You have no picture yet', '你还没有头像'],
  'settings.picture': ['Your picture', '你的头像'],

  // chat
  'chat.title': ['Chat with {name}', '与 {name} 对话'],
  'chat.log': ['Conversation with {name}', '与 {name} 的对话'],
  'chat.conversation': ['Conversation', '对话'],
  'chat.older': ['Load earlier messages', '加载更早的消息'],
  'chat.historyStart': ['This is the beginning of the conversation.', '这是对话的开始。'],
  'chat.inputLabel': ['Message to {name}', '发给 {name} 的消息'],
  'chat.enterHint': ['(Enter to send, Shift+Enter for a new line)', '（Enter 发送，Shift+Enter 换行）'],
  'chat.placeholder': ['Say something…', '说点什么…'],
  'chat.send': ['Send', '发送'],
  'chat.you': ['You', '你'],
  'chat.cancel': ['Stop', '停止'],
  'chat.cancelled': ['The reply was cancelled.', '回复已取消。'],
  'chat.failed': ['The reply failed.', '回复失败。'],
  'chat.resend': ['Send again', '重新发送'],
  'chat.truncated': ['(The reply was cut off at the length limit.)', '（回复因长度限制被截断。）'],
  'chat.profile': ['Profile', '角色资料'],
  'chat.notReady': ['Chat opens when the character is ready.', '角色生成完成后才能对话。'],
  'chat.error.long': ['A message may have at most {max} characters.', '消息最多 {max} 个字符。'],

  // memory
  'memory.title': ['Memory', '记忆'],
  'memory.lead': [
    'What the character remembers of your conversations. The server condenses older messages into short-term memory, and short-term into long-term memory, as the conversation grows.',
    '角色对你们对话的记忆。随着对话变长，服务器会把较早的消息压缩进短期记忆，再把短期记忆整合进长期记忆。',
  ],
  'memory.short_term': ['Short-term memory', '短期记忆'],
  'memory.long_term': ['Long-term memory', '长期记忆'],
  'memory.empty': ['Nothing yet.', '暂无内容。'],
  'memory.edit': ['Edit', '编辑'],
  'memory.refresh': ['Refresh', '刷新'],
  'memory.add': ['Add entry', '添加条目'],
  'memory.remove': ['Remove entry {n}', '删除第 {n} 条'],
  'memory.entryLabel': ['{layer}, entry {n}', '{layer}第 {n} 条'],
  'memory.importance': ['Importance (0–15)', '重要性（0–15）'],
  'memory.saved': ['Memory saved.', '记忆已保存。'],
  'memory.updated': ['Memory updated.', '记忆已更新。'],
  'memory.upToDate': ['Memory is up to date.', '记忆已是最新。'],
  'memory.watching': ['Compressing memory…', '正在整理记忆…'],
  'memory.changedWhileEditing': ['The memory changed on the server while you were editing; saving replaces it with your version.', '编辑期间服务器上的记忆已变化；保存会用你的版本替换它。'],
  'memory.error.long': ['A memory entry may have at most {max} characters.', '每条记忆最多 {max} 个字符。'],
  'memory.error.tooMany': ['At most {max} entries per layer.', '每层最多 {max} 条。'],

  // groups
  'groups.title': ['Groups', '群聊'],
  'groups.lead': ['Put several characters in a group: a moderator picks who speaks after each of your messages.', '把多个角色放进一个群聊：每次你发言后，主持人会决定由谁接话。'],
  'groups.empty': ['No groups yet.', '还没有群聊。'],
  'groups.new': ['New group', '新建群聊'],
  'groups.name': ['Group name', '群聊名称'],
  'groups.pick': ['Members (1 to {max} of your characters)', '成员（从你的角色中选择 1–{max} 个）'],
  'groups.noCharacters': ['You have no characters yet.', '你还没有角色。'],
  'groups.create': ['Create group', '创建群聊'],
  'groups.membersList': ['{n} members: {names}', '{n} 位成员：{names}'],
  'groups.open': ['Open', '进入'],
  'groups.deleteGroup': ['Delete group', '删除群聊'],
  'groups.delete.aria': ['Delete group {name}', '删除群聊 {name}'],
  'groups.delete.title': ['Delete the group “{name}”?', '删除群聊“{name}”？'],
  'groups.delete.body': ['The group and its transcript are deleted. The characters stay.', '群聊及其聊天记录将被删除，角色本身会保留。'],
  'groups.error.name': ['Enter a group name (at most 64 characters).', '请输入群聊名称（最多 64 个字符）。'],
  'groups.error.members': ['Pick at least one character.', '请至少选择一个角色。'],
  'groups.error.tooMany': ['A group has at most {max} members.', '一个群聊最多 {max} 位成员。'],

  // group chat
  'group.back': ['All groups', '全部群聊'],
  'group.log': ['Transcript of {name}', '{name} 的聊天记录'],
  'group.subtitle': ['Members: {names}', '成员：{names}'],
  'group.inputLabel': ['Your message to the group', '发给群聊的消息'],
  'group.placeholder': ['Say something to the group…', '对大家说点什么…'],
  'group.membersTitle': ['Members ({n})', '成员（{n}）'],
  'group.remove': ['Remove', '移除'],
  'group.remove.aria': ['Remove {name} from the group', '把 {name} 移出群聊'],
  'group.removed': ['{name} left the group.', '{name} 已移出群聊。'],
  'group.add': ['Add', '添加'],
  'group.addLabel': ['Add a character', '添加角色'],
  'group.added': ['Member added.', '已添加成员。'],
  'group.noCandidates': ['All your characters are in this group.', '你的所有角色都已在群聊中。'],
  'group.rename': ['Group name', '群聊名称'],
  'group.speaks': ['{name} speaks', '{name} 发言'],
  'group.confidence': ['confidence {n}%', '置信度 {n}%'],
  'group.random': ['picked at random', '随机选择'],
  'group.moderatorSays': ['Moderator:', '主持人：'],
  'group.status.queued': ['Your message is queued…', '消息排队中…'],
  'group.status.moderating': ['The moderator is choosing who speaks…', '主持人正在决定由谁发言…'],
  'group.status.replying': ['{name} is replying…', '{name} 正在回复…'],
  'group.waiting': ['Waiting for you.', '等待你发言。'],
  'group.waiting.maxRounds': ['The characters had their rounds for now.', '本轮发言已达上限。'],
  'group.waiting.moderator': ['The moderator paused: {reason}', '主持人暂停了对话：{reason}'],
  'group.waiting.other': ['({reason})', '（{reason}）'],
  'group.interrupted': ['Interrupted.', '已被打断。'],

  // settings
  'settings.title': ['Settings', '设置'],
  'settings.signedInAs': ['Signed in as {name}.', '当前登录：{name}。'],
  'settings.profile': ['Profile and preferences', '个人资料与偏好'],
  'settings.bio': ['About you', '个人简介'],
  'settings.bio.hint': ['Characters see this when they talk to you.', '角色与你对话时会看到这段介绍。'],
  'settings.language': ['Preferred language', '偏好语言'],
  'settings.language.hint': ['The language a group whose members speak different languages is moderated in.', '当群聊成员使用不同语言时，主持人使用的语言。'],
  'settings.rounds': ['Group rounds per message', '每条消息后的群聊轮数'],
  'settings.rounds.hint': ['How many characters may speak after each of your group messages (1–10).', '你在群聊中每发一条消息后，最多有几位角色接话（1–10）。'],
  'settings.budgets': ['Memory budgets (characters)', '记忆容量（字符数）'],
  'settings.budgets.hint': ['Each between {min} and {max}.', '每项在 {min} 到 {max} 之间。'],
  'settings.budget.session': ['Conversation', '会话记忆'],
  'settings.budget.short': ['Short-term', '短期记忆'],
  'settings.budget.long': ['Long-term', '长期记忆'],
  'settings.error.bio': ['The bio may have at most {max} characters.', '个人简介最多 {max} 个字符。'],
  'settings.error.rounds': ['Group rounds must be a whole number from 1 to 10.', '群聊轮数必须是 1 到 10 的整数。'],
  'settings.error.budget': ['Memory budgets must be whole numbers from {min} to {max}.', '记忆容量必须是 {min} 到 {max} 之间的整数。'],
  'settings.password': ['Change password', '修改密码'],
  'settings.password.current': ['Current password', '当前密码'],
  'settings.password.new': ['New password', '新密码'],
  'settings.password.confirm': ['Repeat the new password', '再次输入新密码'],
  'settings.password.note': ['Your other sessions are logged out; API keys keep working.', '其他登录会话将被注销；API 密钥不受影响。'],
  'settings.password.save': ['Change password', '修改密码'],
  'settings.password.changed': ['Password changed.', '密码已修改。'],
  'settings.password.error.current': ['Enter your current password.', '请输入当前密码。'],
  'settings.sessions': ['Sessions and account', '会话与账号'],
  'settings.logoutEverywhere': ['Log out everywhere', '在所有设备上退出'],
  'settings.logoutEverywhere.hint': ['Ends every session of your account, this one included.', '结束账号的所有登录会话（包括当前会话）。'],
  'settings.logoutEverywhere.title': ['Log out everywhere?', '在所有设备上退出？'],
  'settings.logoutEverywhere.body': ['Every browser and device signed in to your account is logged out, this one too.', '所有已登录你账号的浏览器和设备都会退出，包括当前这个。'],
  'settings.deleteAccount': ['Delete account', '删除账号'],
  'settings.deleteAccount.hint': ['Deletes your account and everything in it: characters, conversations, groups, API keys.', '删除账号及其全部内容：角色、对话、群聊和 API 密钥。'],
  'settings.deleteAccount.password': ['Your password', '你的密码'],
  'settings.deleteAccount.title': ['Delete your account?', '删除你的账号？'],
  'settings.deleteAccount.body': ['This cannot be undone.', '此操作无法撤销。'],

  // api keys
  'keys.title': ['API keys', 'API 密钥'],
  'keys.lead': ['Keys let scripts use the API as you (Authorization: Bearer <key>).', '密钥让脚本以你的身份调用 API（Authorization: Bearer <密钥>）。'],
  'keys.name': ['Key name', '密钥名称'],
  'keys.create': ['Create key', '创建密钥'],
  'keys.empty': ['No API keys.', '没有 API 密钥。'],
  'keys.error.name': ['Enter a name for the key.', '请输入密钥名称。'],
  'keys.secretTitle': ['Your new key “{name}”', '新密钥“{name}”'],
  'keys.secretNote': ['Copy it now: it is shown only this once.', '请立即复制：它只会显示这一次。'],
  'keys.secretLabel': ['New API key', '新的 API 密钥'],
  'keys.copy': ['Copy', '复制'],
  'keys.copied': ['Copied.', '已复制。'],
  'keys.copyFailed': ['Copy failed: select the text and copy it.', '复制失败：请选中文本手动复制。'],
  'keys.done': ['Done', '完成'],
  'keys.created': ['created {when}', '创建于 {when}'],
  'keys.lastUsed': ['last used {when}', '最近使用 {when}'],
  'keys.neverUsed': ['never used', '从未使用'],
  'keys.revokedAt': ['revoked {when}', '已于 {when} 吊销'],
  'keys.revoke': ['Revoke', '吊销'],
  'keys.revoke.aria': ['Revoke key {name}', '吊销密钥 {name}'],
  'keys.revoke.title': ['Revoke the key “{name}”?', '吊销密钥“{name}”？'],
  'keys.revoke.body': ['Scripts using it stop working at once.', '使用该密钥的脚本将立即失效。'],
  'keys.revoked': ['Key revoked.', '密钥已吊销。'],

  // usage
  'usage.title': ['Usage (last 30 days)', '用量（最近 30 天）'],
  'usage.unavailable': ['Usage is not available.', '暂无用量信息。'],
  'usage.calls': ['Model calls', '模型调用次数'],
  'usage.prompt': ['Prompt tokens', '输入 token'],
  'usage.completion': ['Completion tokens', '输出 token'],
  'usage.tokens': ['Tokens', 'Token 数'],
  'usage.day': ['Day (UTC)', '日期（UTC）'],

  // admin
  'admin.title': ['Administration', '系统管理'],
  'admin.stats': ['System', '系统概况'],
  'admin.users': ['Users', '用户'],
  'admin.stat.users': ['users', '用户'],
  'admin.stat.disabled': ['disabled', '已停用'],
  'admin.stat.messages': ['chat messages', '对话消息'],
  'admin.stat.groups': ['groups', '群聊'],
  'admin.stat.groupMessages': ['group messages', '群聊消息'],
  'admin.stat.finished': ['jobs finished (1 h)', '完成任务（1 小时）'],
  'admin.stat.failed': ['jobs failed (1 h)', '失败任务（1 小时）'],
  'admin.stat.characters': ['Characters:', '角色：'],
  'admin.stat.jobs': ['Jobs by kind and status', '按类型和状态统计任务'],
  'admin.broker': ['Job queue: {state}.', '任务队列：{state}。'],
  'admin.connected': ['connected', '已连接'],
  'admin.disconnected': ['not connected', '未连接'],
  'admin.col.user': ['User', '用户'],
  'admin.col.status': ['Status', '状态'],
  'admin.col.characters': ['Characters', '角色数'],
  'admin.col.activeJobs': ['Active jobs', '进行中任务'],
  'admin.col.created': ['Created', '创建时间'],
  'admin.col.action': ['Action', '操作'],
  'admin.col.kind': ['Kind', '类型'],
  'admin.col.count': ['Count', '数量'],
  'admin.adminBadge': ['admin', '管理员'],
  'admin.statusActive': ['active', '正常'],
  'admin.statusDisabled': ['disabled', '已停用'],
  'admin.disable': ['Disable', '停用'],
  'admin.enable': ['Enable', '启用'],
  'admin.disable.aria': ['Disable {name}', '停用 {name}'],
  'admin.enable.aria': ['Enable {name}', '启用 {name}'],
  'admin.disable.title': ['Disable {name}?', '停用 {name}？'],
  'admin.disable.body': ['Their sessions end, their API keys stop and their jobs are stopped. Their data is kept; you can enable the account again.', '该用户的会话将结束、API 密钥失效、任务被停止。数据会保留，之后可以重新启用。'],
  'admin.disabled': ['{name} is disabled ({jobs} jobs stopped).', '{name} 已停用（停止了 {jobs} 个任务）。'],
  'admin.enabled': ['{name} is enabled.', '{name} 已启用。'],

  // not found
  'notFound.title': ['Not found', '页面不存在'],
  'notFound.body': ['There is nothing here — the page does not exist, or what it showed was deleted or belongs to someone else.', '这里什么也没有——页面不存在，或者内容已被删除、属于其他用户。'],
  'notFound.home': ['Go to your characters', '返回我的角色'],
  'notFound.login': ['Log in', '登录'],
};

function detect() {
  try {
    const saved = localStorage.getItem(STORAGE_KEY);
    if (LANGS.includes(saved)) return saved;
  } catch {
    /* storage unavailable */
  }
  const browser = (navigator.languages && navigator.languages[0]) || navigator.language || 'en';
  return browser.toLowerCase().startsWith('zh') ? 'zh' : 'en';
}

let lang = detect();
const listeners = new Set();
applyLang();

function applyLang() {
  document.documentElement.lang = lang === 'zh' ? 'zh-CN' : 'en';
}

export function getLang() {
  return lang;
}

export function setLang(next) {
  if (!LANGS.includes(next) || next === lang) return;
  lang = next;
  try {
    localStorage.setItem(STORAGE_KEY, next);
  } catch {
    /* not remembered */
  }
  applyLang();
  for (const listener of listeners) listener(lang);
}

export function onLangChange(listener) {
  listeners.add(listener);
  return () => listeners.delete(listener);
}

/** The string for `key` in the current language, {placeholders} filled from params. */
export function t(key, params = {}, fallback) {
  const entry = STRINGS[key];
  let text;
  if (entry) text = entry[lang === 'zh' ? 1 : 0];
  else text = fallback !== undefined ? String(fallback) : key;
  if (params) text = text.replace(/\{(\w+)\}/g, (match, name) => (name in params ? String(params[name]) : match));
  return text;
}

/** Every key (for checks). */
export const KEYS = Object.keys(STRINGS);
